"""Synthetic clinical chat lines for the PHI firewall (assistant/firewall.py): data only.

Every name, number, address and email here is invented (phone numbers from the ranges kept for
drama: 07700 900xxx, 020 7946 0xxx, 555-01xx; `.example` domains). Each line lists its gold
spans: the type, the exact substring (the `nth` occurrence of it, counting from 0) and whether
it is a *known* identifier, i.e. a room participant's name, name part of >= 3 letters, email
or email local part (from the graph), which the firewall must always catch. Not known: a part
that is an English word written in lower case ("thanks grace": by rule 2 of the firewall such
words are names only in name-like use), nicknames, misspellings, third parties, patterns: what
the rules should catch. A PERSON span is the name alone (no title, no "'s");
an AGE span is the number. Lines without spans are negative controls: they must come back
unchanged.

MAIN was written with the rules and tuned against. HELD_OUT was written after the rules were
frozen (FIREWALL_VERSION 2026-12-07.1) with formats and variants the rules had not seen, and
the rules were not changed after it: its figures are the honest ones.
"""

from __future__ import annotations

from typing import NamedTuple

from assistant.firewall import Person


class Gold(NamedTuple):
    kind: str
    text: str
    known: bool = False
    nth: int = 0


class Line(NamedTuple):
    text: str
    gold: tuple[Gold, ...] = ()


def _known(kind: str, text: str, nth: int = 0) -> Gold:
    return Gold(kind, text, True, nth)


P, E = "PERSON", "EMAIL"

ROSTER = (
    Person("u-maria", "Maria Kowalski", "maria.kowalski@stmarys.example"),
    Person("u-zoe", "Zoë Okafor", "zoe.okafor@northfield.nhs.uk"),
    Person("u-jose", "José Fernández-Ruiz", "jose.fr@uni-med.example"),
    Person("u-annemarie", "Anne-Marie Dubois", "amdubois@clinic.example"),
    Person("u-will", "Will Hope", "will.hope@stmarys.example"),
    Person("u-grace", "Grace May", "grace.may@mail.example"),
    Person("u-hans", "Hans Müller", "h.mueller@klinikum.example"),
    Person("u-siobhan", "Siobhán O'Brien", "siobhan.obrien@northfield.nhs.uk"),
    Person("u-ed", "Ed Baker", "ed.baker@stmarys.example"),
)

MAIN: tuple[Line, ...] = (
    # ---- participants: full names, parts, cases, possessives, accents
    Line("Maria, can you review bed 4 before the ward round?", (_known(P, "Maria"),)),
    Line("Dr. Kowalski asked for a repeat troponin at 14:30.", (_known(P, "Kowalski"),)),
    Line("MARIA KOWALSKI HAS SIGNED THE DISCHARGE LETTER", (_known(P, "MARIA KOWALSKI"),)),
    Line("per maria's note the patient is stable overnight", (_known(P, "maria"),)),
    Line("Kowalski’s plan: IV fluids 1 L over 8 hours, recheck K+ in the morning.",
         (_known(P, "Kowalski"),)),
    Line("Zoë, the obs are charted; BP 120/80, HR 88, SpO2 96% on air.", (_known(P, "Zoë"),)),
    Line("zoe okafor covered the night shift", (_known(P, "zoe okafor"),)),
    Line("Thanks Zoe! I'll let Okafor know.", (_known(P, "Zoe"), _known(P, "Okafor"))),
    Line("José Fernández-Ruiz will present the case at the teaching session.",
         (_known(P, "José Fernández-Ruiz"),)),
    Line("Fernandez Ruiz, Jose - please add your reflections to the log.",
         (_known(P, "Fernandez Ruiz"), _known(P, "Jose"))),
    Line("Anne-Marie's feedback on the ECG interpretation was excellent.",
         (_known(P, "Anne-Marie"),)),
    Line("ANNE MARIE DUBOIS (teacher) will mark the OSCE stations.",
         (_known(P, "ANNE MARIE DUBOIS"),)),
    Line("Ask Dubois about the 6/52 follow-up.", (_known(P, "Dubois"),)),
    Line("Hans Müller reviewed the MRI with the radiologist.", (_known(P, "Hans Müller"),)),
    Line("Dr Mueller says no surgery for now.", (_known(P, "Mueller"),)),
    Line("MULLER: pt for discharge tomorrow if mobilising", (_known(P, "MULLER"),)),
    Line("Siobhán O'Brien is the nurse in charge tonight.", (_known(P, "Siobhán O'Brien"),)),
    Line("siobhan, obrien's bleep is 4471", (_known(P, "siobhan"), _known(P, "obrien"))),
    Line("Hi all, Siobhan here - bed 7 (MRN 3391847) is for CT at 3pm.",
         (_known(P, "Siobhan"), Gold("MRN", "3391847"))),
    # ---- participants whose names are English words: Will Hope, Grace May, Ed Baker
    Line("Will said the CT is booked for tomorrow morning.", (_known(P, "Will"),)),
    Line("Dr. Hope thinks this is a viral pericarditis.", (_known(P, "Hope"),)),
    Line("Hope's registrar will do the LP after lunch.", (_known(P, "Hope"),)),
    Line("WILL HOPE TO REVIEW AFTER CLINIC", (_known(P, "WILL HOPE"),)),
    Line("Can you ask Grace to check the fluid balance chart?", (_known(P, "Grace"),)),
    Line("Grace May has been moved to bay 3.", (_known(P, "Grace May"),)),
    Line("Will, can you chase the bloods? Thanks, Grace.",
         (_known(P, "Will"), _known(P, "Grace"))),
    Line("Grace's mum says she was 'fine until Tuesday'.", (_known(P, "Grace"),)),
    Line("Anne-Marie and Will are teaching the students on 14/05/2026.",
         (_known(P, "Anne-Marie"), _known(P, "Will"), Gold("DATE", "14/05/2026"))),
    Line("Dr Baker will see the Baker's cyst in clinic.", (_known(P, "Baker"),)),
    Line("Baker said the ultrasound showed a ruptured Baker's cyst.", (_known(P, "Baker"),)),
    # "Ed" alone is a short part (<= 2 letters): matched only with context, so not "known".
    Line("O’Brien checked the controlled drugs with Ed.",
         (_known(P, "O’Brien"), Gold(P, "Ed"))),
    Line("Ed said the ABG is improving.", (Gold(P, "Ed"),)),
    Line("Discussed with Dr. Nowak (cardiology) and Zoë's team.",
         (Gold(P, "Nowak"), _known(P, "Zoë"))),
    Line("Kowalsky (sic) wants a repeat echo.", (Gold(P, "Kowalsky"),)),
    # ---- emails and handles
    Line("Ed Baker (ed.baker@stmarys.example) is on call.",
         (_known(P, "Ed Baker"), _known(E, "ed.baker@stmarys.example"))),
    Line("Email maria.kowalski@stmarys.example or zoe.okafor@northfield.nhs.uk with results.",
         (_known(E, "maria.kowalski@stmarys.example"),
          _known(E, "zoe.okafor@northfield.nhs.uk"))),
    Line("Please email h.mueller@klinikum.example the DEXA report.",
         (_known(E, "h.mueller@klinikum.example"),)),
    Line("@amdubois can you upload the slides?", (_known(P, "amdubois"),)),
    Line("The family asked us to write to j.rahman@familymail.example instead.",
         (Gold(E, "j.rahman@familymail.example"),)),
    # ---- third parties and record numbers
    Line("Patient: Fatima Rahman, MRN 4482913, DOB 02/11/1948.",
         (Gold(P, "Fatima Rahman"), Gold("MRN", "4482913"), Gold("DATE", "02/11/1948"))),
    Line("MRN: 7730152 - admitted 2026-03-14 with chest pain.",
         (Gold("MRN", "7730152"), Gold("DATE", "2026-03-14"))),
    Line("MR# 88412077 needs a repeat INR on Thursday.", (Gold("MRN", "88412077"),)),
    Line("NHS number 943 476 5919, GP is Dr Adeyemi at the Riverside practice.",
         (Gold("MRN", "943 476 5919"), Gold(P, "Adeyemi"))),
    Line("chart #55123 shows HbA1c 7.2% and eGFR 58.", (Gold("MRN", "55123"),)),
    Line("hospital no. A1234567 - allergy to penicillin (rash).", (Gold("MRN", "A1234567"),)),
    Line("Mr Jones is 96 yo and declined the anticoagulation.",
         (Gold(P, "Jones"), Gold("AGE", "96"))),
    # ---- phones
    Line("Her husband Peter phoned; call him back on 07700 900123.",
         (Gold(P, "Peter"), Gold("PHONE", "07700 900123"))),
    Line("Daughter's number is +44 20 7946 0958 (landline).",
         (Gold("PHONE", "+44 20 7946 0958"),)),
    Line("US contact: (555) 014-2233 or 555.014.2233.",
         (Gold("PHONE", "(555) 014-2233"), Gold("PHONE", "555.014.2233"))),
    Line("Pharmacy extension 555-0142 for the warfarin query.", (Gold("PHONE", "555-0142"),)),
    Line("Pt is 98 years old; son Michael is next of kin, phone 0117 496 0123.",
         (Gold("AGE", "98"), Gold(P, "Michael"), Gold("PHONE", "0117 496 0123"))),
    # ---- dates
    Line("Seen on 14/03/2026 and again on 3/14/26 in the US clinic.",
         (Gold("DATE", "14/03/2026"), Gold("DATE", "3/14/26"))),
    Line("Follow-up booked for 14 March 2026 at 09:15.", (Gold("DATE", "14 March 2026"),)),
    Line("Symptoms started March 14th, about 3 days before admission.",
         (Gold("DATE", "March 14th"),)),
    Line("Last colonoscopy 3rd of April, biopsies pending.", (Gold("DATE", "3rd of April"),)),
    Line("Diagnosed with T2DM in Mar-2021, on metformin 500 mg BD.",
         (Gold("DATE", "Mar-2021"),)),
    Line("Discharged 14/3 with 2/7 of oral antibiotics.", (Gold("DATE", "14/3"),)),
    Line("Can we move Grace May's appointment from 3rd of April to 10 April 2026?",
         (_known(P, "Grace May"), Gold("DATE", "3rd of April"), Gold("DATE", "10 April 2026"))),
    # ---- addresses and ages
    Line("She lives at 12 Baker Street, London NW1 6XE with her daughter.",
         (Gold("ADDRESS", "12 Baker Street, London NW1 6XE"),)),
    Line("Flat 2, 14 Elm Road is the correspondence address.",
         (Gold("ADDRESS", "Flat 2, 14 Elm Road"),)),
    Line("Transfer letter to 221B Baker St. please.", (Gold("ADDRESS", "221B Baker St."),)),
    Line("Previous address 1600 Amphitheatre Pkwy, Springfield, IL 62704.",
         (Gold("ADDRESS", "1600 Amphitheatre Pkwy"), Gold("ADDRESS", "Springfield, IL 62704"))),
    Line("Postcode SW1A 1AA for the ambulance booking.", (Gold("ADDRESS", "SW1A 1AA"),)),
    Line("A 92-year-old woman with a fractured neck of femur.", (Gold("AGE", "92"),)),
    Line("aged 95, lives alone, independent with a frame", (Gold("AGE", "95"),)),
    # ---- negative controls: clinical text that must stay intact
    Line("I will add the grace period for submissions; it may be extended."),
    Line("Hope you all had a good weekend, handover is at 8."),
    Line("We may need to repeat the lactate; May is usually a busy month on the unit."),
    Line("In May we audited 40 cannulas and 3 were overdue."),
    Line("BP 120/80, HR 88, temp 37.9, 5 mg amlodipine OD, review in 3 hours."),
    Line("HbA1c 7.2% in 2019, now 6.8%; ICD-10 E11.9 and I21.4."),
    Line("Gave 1 g paracetamol x2 overnight; next dose due at 06:00."),
    Line("Ward round Thursday; discussed yesterday's CT with the registrar."),
    Line("Platelets 150-400, fluid target 100-1500 mL, the 2019-2021 audit."),
    Line("Na 134, K 4.1, Cr 88, Hb 104, WBC 11.2, INR 1.1, CRP 45."),
    Line("Possible Baker's cyst vs DVT; Wells score 2, so a D-dimer first."),
    Line("The patient may benefit from physio; we will hope for a quick recovery."),
    Line("3/52 of cough, 6/12 history of weight loss, vision 6/6."),
)

# Written after FIREWALL_VERSION 2026-12-07.1 was frozen; the rules were not changed after it.
# First and only measurement (make firewall-report): recall 44/51 = 86 %, known 16/16, precision
# 45/48. Missed: a nickname not in the table ("Annie"), a lower-case ambiguous name ("thanks
# grace"), "acc no. 55-1093", "son (Tom)", "03-Feb-26" (2-digit year after day-month: only
# "03-Feb" redacted), "to 02/01", "aged ninety-four". Wrong: "Dr. M. Kowalski" teaches the
# third-party rule the initial "M" as a name (redacted twice), "May 2 units" read as a date.
HELD_OUT: tuple[Line, ...] = (
    Line("Morning team, Dr. M. Kowalski is covering ED today.", (_known(P, "Kowalski"),)),
    Line("zoë's handover sheet is in the shared drive", (_known(P, "zoë"),)),
    Line("Can someone page Fernández? The LP results are back.", (_known(P, "Fernández"),)),
    Line("Annie (Anne-Marie) asked for the slides by Friday.",
         (Gold(P, "Annie"), _known(P, "Anne-Marie"))),
    Line("thanks grace, will do", (Gold(P, "grace"),)),
    Line("Siobhan O Brien rang the bed manager at 07700 900456",
         (_known(P, "Siobhan O Brien"), Gold("PHONE", "07700 900456"))),
    Line("Pt DOB 12.01.1931, now 95 y/o, lives with her granddaughter Chloe.",
         (Gold("DATE", "12.01.1931"), Gold("AGE", "95"), Gold(P, "Chloe"))),
    Line("Dx confirmed on Mon 9th; discussed w/ Hans.", (Gold("DATE", "9th"), _known(P, "Hans"))),
    Line("Referral faxed to 0161 496 0734, attn Mrs Abara.",
         (Gold("PHONE", "0161 496 0734"), Gold(P, "Abara"))),
    Line("Home address: 7 Quarry Hill Close, Leeds LS6 2AB.",
         (Gold("ADDRESS", "7 Quarry Hill Close, Leeds LS6 2AB"),)),
    Line("CHI 0101501234 - Scottish transfer, notes to follow.", (Gold("MRN", "0101501234"),)),
    Line("Her pt ID is 00991837 and the acc no. 55-1093.",
         (Gold("MRN", "00991837"), Gold("MRN", "55-1093"))),
    Line("Email from mueller.hans@klinikum.example came in at 23:10.",
         (Gold(E, "mueller.hans@klinikum.example"),)),
    Line("Kowalski M, Okafor Z - rota swap approved for 2026/04/02.",
         (_known(P, "Kowalski"), _known(P, "Okafor"), Gold("DATE", "2026/04/02"))),
    Line("@grace.may please confirm the 2nd of May slot",
         (_known(P, "grace.may"), Gold("DATE", "2nd of May"))),
    Line("Will Hope's registrar, Dr Chen, will call at 14:00.",
         (_known(P, "Will Hope"), Gold(P, "Chen"))),
    Line("Spoke to the son (Tom) on +1 617 555 0143 re: consent.",
         (Gold(P, "Tom"), Gold("PHONE", "+1 617 555 0143"))),
    Line("She's a 101 yr old lady from Apt 3, 55 Harbor Blvd, Boston, MA 02110.",
         (Gold("AGE", "101"), Gold("ADDRESS", "Apt 3, 55 Harbor Blvd, Boston, MA 02110"))),
    Line("Reviewed 03-Feb-26 by JOSE; next visit 17 Feb.",
         (Gold("DATE", "03-Feb-26"), _known(P, "JOSE"), Gold("DATE", "17 Feb"))),
    Line("MULLER'S note says BMI 41, HbA1c 9.1%, on 3 agents.", (_known(P, "MULLER"),)),
    Line("Patient is Mr. Kwame Mensah, NHS no. 401 023 2137.",
         (Gold(P, "Kwame Mensah"), Gold("MRN", "401 023 2137"))),
    Line("Plan per Dr Grace: hold metformin until eGFR > 30.", (_known(P, "Grace"),)),
    Line("Hope, can you cover Saturday? Grace is on leave from 22/12 to 02/01.",
         (_known(P, "Hope"), _known(P, "Grace"), Gold("DATE", "22/12"), Gold("DATE", "02/01"))),
    Line("Contact: WARD7.BOOKINGS@NORTHFIELD.NHS.UK or 020-7946-0321.",
         (Gold(E, "WARD7.BOOKINGS@NORTHFIELD.NHS.UK"), Gold("PHONE", "020-7946-0321"))),
    Line("US follow-up 04/15/2026, then Jan 5th, 2026 was the last echo.",
         (Gold("DATE", "04/15/2026"), Gold("DATE", "Jan 5th, 2026"))),
    Line("Okafour (sp?) moved her to Unit 5, 2 Mill Lane for rehab.",
         (Gold(P, "Okafour"), Gold("ADDRESS", "Unit 5, 2 Mill Lane"))),
    Line("Dubois' OSCE notes: DOB: 1 Jan 1930, aged ninety-four.",
         (_known(P, "Dubois"), Gold("DATE", "1 Jan 1930"), Gold("AGE", "ninety-four"))),
    # negative controls
    Line("Discussed the Graves' disease case, TSH < 0.01, on carbimazole 20 mg."),
    Line("We will hope to step down to oral antibiotics in 48-72 hours."),
    Line("May 2 units of blood be given before theatre? Hb 71."),
    Line("Repeat bloods at 0800; the 5/7 course of pred ends Sunday."),
    Line("Bill for the interpreter goes to the family, not the trust."),
)
