"""Hand-written preference rows shared by the eval tests."""

from __future__ import annotations

import json
from pathlib import Path

LISTING_ROWS = [
    {"id": "p1", "kind": "hype",
     "prompt": [{"role": "user", "content": "Write a listing description for: condo, 2 beds, 1.5 baths, 940 sq ft, "
                                             "Elm Hill, in-unit laundry, heat pump."}],
     "chosen": [{"role": "assistant", "content": "Bright 2-bed, 1.5-bath condo in Elm Hill with 940 sq ft, in-unit "
                                                 "laundry and a heat pump. A 4-minute walk to the 52 express bus."}],
     "rejected": [{"role": "assistant", "content": "STUNNING condo!!! A once-in-a-lifetime dream home you will "
                                                   "love, must-see!"}]},
    {"id": "p2", "kind": "wrong_number",
     "prompt": [{"role": "user", "content": "Describe this house: 3 beds, 2 baths, 1,600 sq ft, Riverside, "
                                             "fenced backyard, built 1996."}],
     "chosen": [{"role": "assistant", "content": "A 3-bed, 2-bath house in Riverside: 1,600 sq ft, a fenced "
                                                 "backyard, built in 1996."}],
     "rejected": [{"role": "assistant", "content": "A 4-bed, 2-bath house in Riverside: 1,900 sq ft, a fenced "
                                                   "backyard, built in 1996."}]},
    {"id": "p3", "kind": "vague",
     "prompt": [{"role": "user", "content": "Describe: loft, 1 bed, exposed brick, skylights, Old Town."}],
     "chosen": [{"role": "assistant", "content": "One-bedroom loft in Old Town with exposed brick and skylights."}],
     "rejected": [{"role": "assistant", "content": "A lovely loft in a great neighbourhood."}]},
]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
