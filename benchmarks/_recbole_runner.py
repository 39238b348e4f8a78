"""RecBole 1.2.1 LightGCN on a split written by ``benchmarks/speed.py`` (not a test, no polyrec).

Runs under an interpreter that has ``recbole==1.2.1`` (numpy < 2, scipy < 1.12); imports only
recbole, torch, numpy and the standard library. ``speed.py`` writes RecBole atomic files for the
exact split polyrec trained on::

    DATA_DIR/DS/DS.train.inter   distinct (user, item) target pairs of polyrec's training split
    DATA_DIR/DS/DS.valid.inter   polyrec's validation pairs
    DATA_DIR/DS/DS.test.inter    polyrec's test pairs (the published held-out buy per user)
    DATA_DIR/DS/DS.item          every item id of the dataset (so RecBole ranks the same items)
    DATA_DIR/DS/negatives.npz    polyrec's stored 1+N candidates (valid/test user, item, negatives)

and runs ``python _recbole_runner.py --data-dir DATA_DIR --dataset DS [...]`` with that
interpreter. The runner trains RecBole's LightGCN with early stopping on validation NDCG@10,
times every ``Trainer._train_epoch`` call and the full-ranking test evaluation, and prints ONE
JSON line (the last line of stdout) with the results.

RecBole 1.2.1 on current torch: its checkpoint reload uses ``torch.load`` without
``weights_only=False`` and fails on torch >= 2.6, so the runner trains with ``saved=False``, keeps
a copy of the best validation weights itself and evaluates with ``load_best_model=False``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _sampled_metrics(model, dataset, part: dict, ks: list[int]) -> dict[str, float]:
    """HR@k / NDCG@k of each held-out pair ranked among polyrec's stored N negatives.

    Same rule as polyrec's sampled protocol: rank = #{negatives with score >= positive's score}
    (pessimistic ties); metrics averaged over pairs. Ids are polyrec dense ids written as tokens.
    """
    import numpy as np
    import torch
    from recbole.data.interaction import Interaction

    uid_field, iid_field = dataset.uid_field, dataset.iid_field
    u_tok = dataset.field2token_id[uid_field]
    i_tok = dataset.field2token_id[iid_field]
    users = np.array([u_tok[str(u)] for u in part["user"]], dtype=np.int64)
    items = np.array([i_tok[str(i)] for i in part["item"]], dtype=np.int64)
    neg_raw = part["negatives"]
    lookup = np.zeros(int(neg_raw.max(initial=0)) + 1, dtype=np.int64)
    for tok, idx in i_tok.items():
        if tok != "[PAD]":
            t = int(tok)
            if t < len(lookup):
                lookup[t] = idx
    negs = lookup[neg_raw]
    ranks = []
    model.eval()
    with torch.no_grad():
        for s in range(0, len(users), 1024):
            ub = torch.from_numpy(users[s : s + 1024])
            scores = model.full_sort_predict(Interaction({uid_field: ub})).view(len(ub), -1)
            rows = torch.arange(len(ub))
            pos = scores[rows, torch.from_numpy(items[s : s + 1024])]
            neg = scores[rows.unsqueeze(1), torch.from_numpy(negs[s : s + 1024])]
            ranks.append((neg >= pos.unsqueeze(1)).sum(1))
    rank = torch.cat(ranks).double()
    out: dict[str, float] = {}
    for k in ks:
        hit = rank < k
        out[f"hr@{k}"] = float(hit.double().mean())
        out[f"ndcg@{k}"] = float((hit.double() / torch.log2(rank + 2.0)).mean())
    return out


def full_ranking_check(score_fn, hold_user, hold_item, mask_user, mask_item, n_items, ks):
    """Independent full-ranking HR@k / NDCG@k, the same code for both libraries.

    ``score_fn(users: np.ndarray) -> Tensor[len(users), n_items]`` scores in polyrec's dense
    item ids; ``mask_*`` are the (user, item) pairs set to -inf (training pairs, plus the
    validation pairs for test); positives never masked; plain ``torch.topk`` (no tie rule).
    Averaged over users with a held-out pair. Used by ``speed.py`` on polyrec's model too.
    """
    import numpy as np
    import torch

    hold_user = np.asarray(hold_user, np.int64)
    hold_item = np.asarray(hold_item, np.int64)
    pos_keys = np.unique(hold_user * n_items + hold_item)
    mkeys = np.unique(np.asarray(mask_user, np.int64) * n_items + np.asarray(mask_item, np.int64))
    mkeys = np.setdiff1d(mkeys, pos_keys, assume_unique=True)
    users = np.unique(hold_user)
    kmax = max(ks)
    sums = {f"{m}@{k}": 0.0 for k in ks for m in ("hr", "ndcg")}
    for s in range(0, len(users), 1024):
        ub = users[s : s + 1024]
        scores = score_fn(ub).detach().to(torch.float32).clone()
        lo, hi = ub[0] * n_items, (ub[-1] + 1) * n_items
        mk = mkeys[(mkeys >= lo) & (mkeys < hi)]
        rows = np.searchsorted(ub, mk // n_items)
        ok = ub[np.minimum(rows, len(ub) - 1)] == mk // n_items
        scores[torch.from_numpy(rows[ok]), torch.from_numpy(mk[ok] % n_items)] = -torch.inf
        top = torch.topk(scores, kmax, dim=1).indices.numpy()
        keys = ub[:, None] * n_items + top
        pos = np.searchsorted(pos_keys, keys).clip(max=len(pos_keys) - 1)
        hit = pos_keys[pos] == keys  # [B, kmax]
        pk = pos_keys[(pos_keys >= lo) & (pos_keys < hi)]
        npos = np.bincount(np.searchsorted(ub, pk // n_items), minlength=len(ub))
        disc = 1.0 / np.log2(np.arange(kmax) + 2.0)
        for k in ks:
            h = hit[:, :k]
            idcg = np.array([disc[: min(n, k)].sum() for n in npos])
            sums[f"hr@{k}"] += float(h.any(1).sum())
            sums[f"ndcg@{k}"] += float(((h * disc[:k]).sum(1) / np.maximum(idcg, 1e-12)).sum())
    return {k: v / len(users) for k, v in sums.items()}


def _read_pairs(path: Path):
    import numpy as np

    a = np.loadtxt(path, dtype=np.int64, skiprows=1, ndmin=2)
    return a[:, 0], a[:, 1]


def _metrics(result: dict) -> dict[str, float]:
    """RecBole's 'hit@10' / 'ndcg@10' keys as polyrec's 'hr@10' / 'ndcg@10'."""
    out = {}
    for k, v in (result or {}).items():
        name, _, cut = k.partition("@")
        out[("hr" if name == "hit" else name) + "@" + cut] = float(v)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--epochs", type=int, default=300, help="maximum epochs (RecBole's default 300)"
    )
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--reg", type=float, default=1e-5)
    ap.add_argument(
        "--require-pow",
        action="store_true",
        help="EmbLoss as Σ‖e‖²/(2B) (polyrec's form) instead of RecBole's default Σ‖e‖/B",
    )
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--eval-reps", type=int, default=5, help="timed test evaluations")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    t_import = time.perf_counter()
    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.general_recommender import LightGCN
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    t_import = time.perf_counter() - t_import

    data_dir = args.data_dir.resolve()
    ds_dir = data_dir / args.dataset
    n_items_file = len((ds_dir / f"{args.dataset}.item").read_text().splitlines()) - 1
    work = ds_dir / "_recbole_work"
    work.mkdir(exist_ok=True)
    os.chdir(work)  # RecBole writes log/ and log_tensorboard/ into the working directory

    config_dict = {
        "data_path": str(data_dir),
        "benchmark_filename": ["train", "valid", "test"],
        "load_col": {"inter": ["user_id", "item_id"], "item": ["item_id"]},
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        # no filtering of any kind: the split is given
        "user_inter_num_interval": "[0,inf)",
        "item_inter_num_interval": "[0,inf)",
        "filter_inter_by_user_or_item": False,
        "rm_dup_inter": None,
        "val_interval": None,
        # model and training
        "embedding_size": args.dim,
        "n_layers": args.layers,
        "reg_weight": args.reg,
        "require_pow": bool(args.require_pow),
        "epochs": args.epochs,
        "train_batch_size": args.batch_size,
        "learner": "adam",
        "learning_rate": args.lr,
        "weight_decay": 0.0,
        "train_neg_sample_args": {
            "distribution": "uniform",
            "sample_num": 1,
            "alpha": 1.0,
            "dynamic": False,
            "candidate_num": 0,
        },
        "eval_step": 1,
        "stopping_step": args.patience,
        # evaluation: full ranking, users grouped, 1024 users per scoring batch (eval_batch_size is
        # counted in score cells for full ranking: users per batch = eval_batch_size // n_items)
        "eval_args": {"group_by": "user", "order": "RO", "mode": "full"},
        "metrics": ["Hit", "NDCG"],
        "topk": [10, 20],
        "valid_metric": "NDCG@10",
        "metric_decimal_place": 6,
        "eval_batch_size": 1024 * (n_items_file + 1),
        "seed": args.seed,
        "reproducibility": True,
        "use_gpu": False,
        "device": "cpu",
        "show_progress": False,
        "state": "WARNING",
        "checkpoint_dir": str(work / "saved"),
        "worker": 0,
    }

    t0 = time.perf_counter()
    config = Config(model="LightGCN", dataset=args.dataset, config_dict=config_dict)
    config["device"] = torch.device("cpu")
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = LightGCN(config, train_data._dataset).to(config["device"])
    trainer = Trainer(config, model)
    setup_seconds = time.perf_counter() - t0
    torch.set_num_threads(args.threads)  # in case anything above reset it

    epoch_seconds: list[float] = []
    valid_seconds: list[float] = []
    orig_train_epoch = trainer._train_epoch
    orig_valid_epoch = trainer._valid_epoch

    epoch_cpu: list[float] = []

    def timed_train_epoch(*a, **kw):
        c = time.process_time()
        t = time.perf_counter()
        out = orig_train_epoch(*a, **kw)
        epoch_seconds.append(time.perf_counter() - t)
        epoch_cpu.append(time.process_time() - c)
        return out

    def timed_valid_epoch(*a, **kw):
        t = time.perf_counter()
        out = orig_valid_epoch(*a, **kw)
        valid_seconds.append(time.perf_counter() - t)
        return out

    trainer._train_epoch = timed_train_epoch
    trainer._valid_epoch = timed_valid_epoch

    best = {"state": None, "epoch": -1}
    history: list[dict] = []

    def on_epoch(epoch_idx: int, valid_score: float) -> None:
        # called after early_stopping(): cur_step == 0 exactly when this epoch became the best
        loss = trainer.train_loss_dict.get(epoch_idx)
        n_batches = max(len(train_data), 1)
        history.append(
            {
                "epoch": epoch_idx + 1,
                "loss": None if loss is None else float(loss) / n_batches,
                "valid_ndcg@10": float(valid_score),
            }
        )
        if trainer.cur_step == 0:
            best["state"] = copy.deepcopy(model.state_dict())
            best["epoch"] = epoch_idx + 1

    t_fit = time.perf_counter()
    best_valid_score, _best_valid_result = trainer.fit(
        train_data,
        valid_data,
        verbose=False,
        saved=False,
        show_progress=False,
        callback_fn=on_epoch,
    )
    fit_seconds = time.perf_counter() - t_fit
    if best["state"] is not None:
        model.load_state_dict(best["state"])

    # the best weights on validation (as RecBole reports them) and on test, full ranking
    model.restore_user_e = model.restore_item_e = None
    valid_result = trainer.evaluate(valid_data, load_best_model=False)
    test_seconds = []
    test_result = None
    for _ in range(max(1, args.eval_reps)):
        model.restore_user_e = model.restore_item_e = None  # include the propagation each time
        t = time.perf_counter()
        test_result = trainer.evaluate(test_data, load_best_model=False)
        test_seconds.append(time.perf_counter() - t)
    peak = _peak_rss_mib()

    sampled = {}
    neg_file = ds_dir / "negatives.npz"
    if neg_file.exists():
        z = np.load(neg_file)
        for part in ("valid", "test"):
            if f"{part}_negatives" in z.files:
                sampled[part] = _sampled_metrics(
                    model,
                    test_data._dataset,
                    {
                        "user": z[f"{part}_user"],
                        "item": z[f"{part}_item"],
                        "negatives": z[f"{part}_negatives"],
                    },
                    [10, 20],
                )

    # the same full-ranking metrics computed by full_ranking_check (shared with speed.py)
    check = {}
    ds = test_data._dataset
    u_tok = ds.field2token_id[ds.uid_field]
    i_tok = ds.field2token_id[ds.iid_field]
    item_perm = torch.tensor([i_tok[str(i)] for i in range(n_items_file)], dtype=torch.long)
    tr_u, tr_i = _read_pairs(ds_dir / f"{args.dataset}.train.inter")
    va_u, va_i = _read_pairs(ds_dir / f"{args.dataset}.valid.inter")
    te_u, te_i = _read_pairs(ds_dir / f"{args.dataset}.test.inter")
    model.restore_user_e = model.restore_item_e = None

    def score_fn(users):
        from recbole.data.interaction import Interaction

        ids = torch.tensor([u_tok[str(u)] for u in users.tolist()], dtype=torch.long)
        with torch.no_grad():
            sc = model.full_sort_predict(Interaction({ds.uid_field: ids})).view(len(ids), -1)
        return sc[:, item_perm]

    n_it = n_items_file
    check["valid"] = full_ranking_check(score_fn, va_u, va_i, tr_u, tr_i, n_it, [10, 20])
    check["test"] = full_ranking_check(
        score_fn, te_u, te_i, np.r_[tr_u, va_u], np.r_[tr_i, va_i], n_it, [10, 20]
    )

    n_train = len(train_data._dataset)
    result = {
        "side": "recbole",
        "recbole": recbole.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "threads": torch.get_num_threads(),
        "settings": {
            k: config_dict[k]
            for k in (
                "embedding_size",
                "n_layers",
                "reg_weight",
                "require_pow",
                "train_batch_size",
                "learning_rate",
                "stopping_step",
                "valid_metric",
                "eval_batch_size",
                "seed",
                "epochs",
            )
        },
        "n_users": int(dataset.user_num - 1),
        "n_items": int(dataset.item_num - 1),
        "train_pairs": int(n_train),
        "valid_users": len(valid_data.uid_list),
        "test_users": len(test_data.uid_list),
        "batches_per_epoch": math.ceil(n_train / args.batch_size),
        "import_seconds": t_import,
        "setup_seconds": setup_seconds,
        "fit_seconds": fit_seconds,
        "fit_other_seconds": fit_seconds - sum(epoch_seconds) - sum(valid_seconds),
        "epochs_run": len(epoch_seconds),
        "epoch_cap_hit": len(epoch_seconds) >= args.epochs,
        "best_epoch": best["epoch"],
        "epoch_seconds": epoch_seconds,
        "epoch_seconds_median": statistics.median(epoch_seconds) if epoch_seconds else None,
        "epoch_seconds_mean": statistics.fmean(epoch_seconds) if epoch_seconds else None,
        "epoch_cpu_seconds": epoch_cpu,
        "epoch_cpu_seconds_median": statistics.median(epoch_cpu) if epoch_cpu else None,
        "valid_eval_seconds": valid_seconds,
        "valid_eval_seconds_median": statistics.median(valid_seconds) if valid_seconds else None,
        "test_eval_seconds": test_seconds,
        "test_eval_seconds_median": statistics.median(test_seconds),
        "peak_rss_mib": peak,
        "best_valid_score": float(best_valid_score),
        "valid": {
            "full": _metrics(valid_result),
            **({"sampled": sampled["valid"]} if "valid" in sampled else {}),
        },
        "test": {
            "full": _metrics(test_result),
            **({"sampled": sampled["test"]} if "test" in sampled else {}),
        },
        "history": history,
        "full_check": check,
    }
    line = json.dumps(result)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    print(line, flush=True)


if __name__ == "__main__":
    main()
