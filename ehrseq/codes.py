"""Event-code conventions ehrseq uses (MEDS style: ``VOCAB//VALUE``).

The synthetic cohort writes these codes and the built-in targets read them. Real data can use other
codes: every target takes the code(s) it needs as a parameter, with these as defaults.
"""

from __future__ import annotations

BIRTH = "MEDS_BIRTH"
DEATH = "MEDS_DEATH"
SEX_PREFIX = "SEX//"  # static, time is null: SEX//F, SEX//M
SITE_PREFIX = "SITE//"  # static, time is null: SITE//A, SITE//B
VISIT = "VISIT//OUTPATIENT"
DX_PREFIX = "ICD10//"
LAB_PREFIX = "LAB//"
RX_PREFIX = "RX//"

CDAI = "SCORE//CDAI"  # numeric_value: Clinical Disease Activity Index, 0-76
ESR = "LAB//ESR"  # mm/h
CRP = "LAB//CRP"  # mg/L
RF = "LAB//RF"  # IU/mL
ANTI_CCP = "LAB//ANTI_CCP"  # U/mL
LABS = (ESR, CRP, RF, ANTI_CCP)

CSDMARDS = ("RX//METHOTREXATE", "RX//HYDROXYCHLOROQUINE", "RX//SULFASALAZINE", "RX//LEFLUNOMIDE")
BIOLOGICS = ("RX//ADALIMUMAB", "RX//ETANERCEPT", "RX//TOCILIZUMAB", "RX//ABATACEPT", "RX//RITUXIMAB")
STEROIDS = ("RX//PREDNISONE",)
DRUGS = CSDMARDS + BIOLOGICS + STEROIDS

BIOPSY_REPORT = "NOTE//TA_BIOPSY"  # text_value holds the pathology report
BIOPSY_LABELS = ("adventitial_inflammation", "giant_cells", "intimal_hyperplasia", "gca")

FLARE = "EVENT//FLARE"
BIOLOGIC_FAILURE = "EVENT//BIOLOGIC_FAILURE"

# CDAI <= 10 is "controlled" (remission or low disease activity), as in Norgeot et al. 2019.
CDAI_CONTROLLED_MAX = 10.0
