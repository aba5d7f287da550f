"""Which side of a referral may invoke each referral operation (issue 10: "only the receiving
organization accepts, only the sender cancels"), as data. From the "Allowed actors" column of
referral-model.md §2.5 (roles: SD sender doctor, SC sender-side coordinator; RC receiver
coordinator, RD receiver doctor, RA receiver approver, REG receiver registration):

| operation | side | referral-model.md §2.5 |
|---|---|---|
| $submit | sender | T1/T2: SD, SC |
| $claim | receiver | T3/T4: RC "of owner org" ("owner org matches user org") |
| $accept | receiver | T7 RC, RD, RA; T8 RC; T9 RD |
| $reject | receiver | T10: RC, RD, RA |
| $request-info | receiver | T5: RC, RD, RA |
| $provide-info | sender | T6: SD, SC |
| $cancel | sender | T11: SD, SC "(sender org)" (ADM is not a user role here) |
| $check-in | receiver | T13: REG, RC, RD |
| $start-treatment | receiver | T14: RD |
| $no-show | receiver | T15: REG, RC |
| $complete | receiver | T16/T17: RD (or RC on behalf) |
| $fail | receiver | T18: RD |
| $enter-in-error | either | T19: SD "own drafts/requests", ADM; the receiver finds errors too |

The receiving side is the organization of Task.owner (an Organization at submission, a
PractitionerRole after $claim; for an approval sub-task, its approver); the sending side is
the organization of the ServiceRequest's requester (a PractitionerRole, yl-referral-request).
Timers (SYS) do not go through these operations' REST entry, so no rule here stops them."""

from __future__ import annotations

RECEIVER, SENDER, EITHER = "receiver", "sender", "either"

SIDES: dict[str, str] = {
    "$submit": SENDER,
    "$claim": RECEIVER,
    "$accept": RECEIVER,
    "$reject": RECEIVER,
    "$request-info": RECEIVER,
    "$provide-info": SENDER,
    "$cancel": SENDER,
    "$check-in": RECEIVER,
    "$start-treatment": RECEIVER,
    "$no-show": RECEIVER,
    "$complete": RECEIVER,
    "$fail": RECEIVER,
    "$enter-in-error": EITHER,
}
