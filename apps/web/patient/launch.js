// The patient app's standalone launch: the patient signs in and gets a token for their own
// compartment only (patient/ scopes; the server sets the patient from the sign-in).
import { launch } from "../lib/smart.js";

const scope = "openid fhirUser launch/patient patient/*.rs";
launch("yl-patient", { ehr: scope, standalone: scope });
