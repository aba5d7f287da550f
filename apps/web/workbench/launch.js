// The workbench's SMART launch: EHR launch (the EHR's patient, user/ scopes for the worklists)
// or standalone (no patient: the doctor picks one from a worklist).
import { launch } from "../lib/smart.js";

launch("yl-workbench", {
  ehr: "openid fhirUser launch user/*.cruds",
  standalone: "openid fhirUser user/*.cruds",
});
