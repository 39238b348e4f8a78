"""Rebuild the embedded default dataset from the HKUDS Retailrocket files.

Usage: python tools/make_embedded.py [SOURCE_FOLDER]

SOURCE_FOLDER defaults to ../shared/data/retailrocket-hkuds (relative to the repository root) or
$POLYREC_SHARED_DATA/retailrocket-hkuds. Writes src/polyrec/data/embedded/retailrocket/
(zstd Parquet + dataset.json + NOTICE) and checks the expected counts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from polyrec.data.importers.hkuds import read_hkuds
from polyrec.data.log import FOLD_TEST, FOLD_TRAIN

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "polyrec" / "data" / "embedded" / "retailrocket"
EXPECTED = {"users": 2174, "items": 30113, "train": 97381, "test": 2174}

NOTICE = """\
Embedded dataset: retailrocket
==============================

This folder holds a converted copy of the Retailrocket e-commerce dataset, as preprocessed by
HKUDS for the CML and SSLRec projects:

  * Original data: "Retailrocket recommender system dataset", Retailrocket,
    published on Kaggle: https://www.kaggle.com/datasets/retailrocket/ecommerce-dataset
  * Preprocessing (user/item filtering and re-indexing, view/cart/buy matrices with unix
    timestamps, one held-out purchase per user as the test split): HKUDS,
    CML (https://github.com/weiwei1206/CML) and SSLRec (https://github.com/HKUDS/SSLRec,
    datasets/multi_behavior/retail_rocket @ 7597c31ce3f78c7497918d886b90df6d4d02cad5;
    tst_int @ 0a5ea13584d2dedd5184349289ff05443011b02f).
  * Conversion: polyrec's tools/make_embedded.py read those pickled scipy matrices and wrote
    them as Parquet tables (interactions.parquet: dense user, item, behavior, timestamp, fold;
    users.parquet / items.parquet: the original matrix row / column indices). Test rows carry
    the user's latest train timestamp + 1 (the published test matrix holds no time).

Licence: Creative Commons Attribution-NonCommercial-ShareAlike 4.0 International
(CC BY-NC-SA 4.0), https://creativecommons.org/licenses/by-nc-sa/4.0/ .
You may share and adapt this data for non-commercial purposes, giving appropriate credit to
Retailrocket, indicating changes, and distributing derived data under the same licence.
This licence covers this folder only; polyrec's code is licensed separately.

Contents: 2,174 users x 30,113 items; behaviors view, cart, buy (target);
97,381 train interactions (view 75,374, cart 12,456, buy 9,551) + 2,174 published test buys.
"""


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        src = Path(argv[1])
    else:
        base = os.environ.get("POLYREC_SHARED_DATA") or str(ROOT.parent / "shared" / "data")
        src = Path(base) / "retailrocket-hkuds"
    log = read_hkuds(src, name="retailrocket")
    log.source = (
        "Retailrocket e-commerce dataset (Kaggle, CC BY-NC-SA 4.0) via HKUDS CML/SSLRec "
        "preprocessing; timestamps: unix seconds; published test pairs from tst_int/test_mat.pkl; "
        "test time = user's latest train time + 1"
    )
    got = {
        "users": log.n_users,
        "items": log.n_items,
        "train": int((log.fold == FOLD_TRAIN).sum()) if log.fold is not None else -1,
        "test": int((log.fold == FOLD_TEST).sum()) if log.fold is not None else -1,
    }
    if got != EXPECTED:
        print(f"unexpected counts {got}, expected {EXPECTED}", file=sys.stderr)
        return 1
    log.save(OUT)
    (OUT / "NOTICE").write_text(NOTICE)
    OUT.chmod(0o755)  # InteractionLog.save builds the folder with mkdtemp (mode 0700)
    size = sum(f.stat().st_size for f in OUT.iterdir())
    print(f"wrote {OUT} ({size / 1024:.0f} KiB): {got}, fingerprint {log.fingerprint()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
