"""Which side of a referral may make each transition (issue 10: "only the receiving
organization accepts, only the sender cancels"), as data, for the operations and for plain
PUT/PATCH of the Task alike. From the "Allowed actors" column of referral-model.md §2.5
(roles: SD sender doctor, SC sender-side coordinator; RC receiver coordinator, RD receiver
doctor, RA receiver approver, REG receiver registration; SYS the server's timers):

| transition (yl-transition) | operation | side | referral-model.md §2.5 |
|---|---|---|---|
| submit, submit-booked | $submit | sender | T1/T2: SD, SC |
| claim, review | $claim | receiver | T3/T4: RC "of owner org" ("owner org matches user org") |
| request-info | $request-info | receiver | T5: RC, RD, RA |
| provide-info | $provide-info | sender | T6: SD, SC |
| accept, assign-bed, confirm-booking | $accept | receiver | T7 RC, RD, RA; T8 RC; T9 RD |
| reject, redirect | $reject | receiver | T10: RC, RD, RA |
| cancel | $cancel | sender | T11: SD, SC "(sender org)" (ADM is not a user role here) |
| expire | (timer) | none | T12: SYS only |
| check-in | $check-in | receiver | T13: REG, RC, RD |
| start-treatment | $start-treatment | receiver | T14: RD |
| no-show | $no-show | receiver | T15: REG, RC |
| complete, complete-down-referred | $complete | receiver | T16/T17: RD (or RC on behalf) |
| fail | $fail | receiver | T18: RD |
| enter-in-error | $enter-in-error | either | T19: SD "own drafts/requests", ADM; the receiver too |

Any other plain change of a referral Task (a note, an output) is either side's. The receiving
side is the organization of Task.owner (an Organization at submission, a PractitionerRole after
$claim; for an approval sub-task, its approver); the sending side is the organization of the
ServiceRequest's requester (a PractitionerRole, yl-referral-request). A user acts for the
organization of their PractitionerRole, a backend client for the one it was registered with
(`client add --organization`). Timers do not go through REST, so no rule here stops them."""

from __future__ import annotations

RECEIVER, SENDER, EITHER = "receiver", "sender", "either"

#: yl-transition code -> the side that may make it; None: only the server's timers
TRANSITIONS: dict[str, str | None] = {
    "submit": SENDER,
    "submit-booked": SENDER,
    "claim": RECEIVER,
    "review": RECEIVER,
    "request-info": RECEIVER,
    "provide-info": SENDER,
    "accept": RECEIVER,
    "assign-bed": RECEIVER,
    "confirm-booking": RECEIVER,
    "reject": RECEIVER,
    "redirect": RECEIVER,
    "cancel": SENDER,
    "expire": None,
    "check-in": RECEIVER,
    "start-treatment": RECEIVER,
    "no-show": RECEIVER,
    "complete": RECEIVER,
    "complete-down-referred": RECEIVER,
    "fail": RECEIVER,
    "enter-in-error": EITHER,
}

#: each operation's side: that of the transition it is named after
SIDES: dict[str, str | None] = {
    f"${code}": TRANSITIONS[code]
    for code in (
        "submit", "claim", "accept", "reject", "request-info", "provide-info", "cancel",
        "check-in", "start-treatment", "no-show", "complete", "fail", "enter-in-error",
    )
}  # fmt: skip
