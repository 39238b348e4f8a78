"""Synthetic multi-behavior logs with learnable structure (for tests and scale benchmarks).

Items belong to ``n_topics`` topics (also their category); each user prefers a few topics
(Dirichlet), users' activity and items' popularity follow power laws. Views are drawn from the
user's topics; carts are a subset of views, buys a subset of carts plus a few direct buys (a
purchase funnel), each later in time than the step before. Everything is vectorised: 10M
interactions take seconds; memory is linear in the interactions (no users × items array).

A log has about ``n_views × (1 + cart_rate × (1 + buy_rate) + direct_buy_rate)`` rows
(``n_views_for`` inverts this for a wanted total).
"""

from __future__ import annotations

import numpy as np

from polyrec.data.log import IdMap, InteractionLog


def _power_law_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    w = (np.arange(1, n + 1, dtype=np.float64)) ** (-exponent)
    rng.shuffle(w)
    return w / w.sum()


def n_views_for(
    n_interactions: int,
    *,
    cart_rate: float = 0.3,
    buy_rate: float = 0.5,
    direct_buy_rate: float = 0.05,
) -> int:
    """``n_views`` for which :func:`synthetic_log` gives about ``n_interactions`` rows in all
    (views, carts, buys; the expected total, within a few √n of it)."""
    per_view = 1.0 + cart_rate * (1.0 + buy_rate) + direct_buy_rate
    return max(1, round(n_interactions / per_view))


# views whose topic is drawn at once: bounds the [views, n_topics] comparison block in memory
_TOPIC_CHUNK = 1 << 20


def _draw_topics(u: np.ndarray, cdf: np.ndarray, users: np.ndarray) -> np.ndarray:
    """Topic of each view: the number of the user's cumulative topic weights below ``u``
    (inverse CDF), in chunks of views so that memory stays O(chunk × n_topics)."""
    n_topics = cdf.shape[1]
    out = np.empty(len(users), dtype=np.int64)
    for lo in range(0, len(users), _TOPIC_CHUNK):
        hi = lo + _TOPIC_CHUNK
        out[lo:hi] = (u[lo:hi, None] > cdf[users[lo:hi]]).sum(axis=1)
    return out.clip(max=n_topics - 1)


def synthetic_log(
    n_users: int = 300,
    n_items: int = 400,
    n_views: int = 6000,
    *,
    n_topics: int = 8,
    cart_rate: float = 0.3,
    buy_rate: float = 0.5,
    direct_buy_rate: float = 0.05,
    days: float = 60.0,
    user_exponent: float = 0.6,
    item_exponent: float = 0.8,
    concentration: float = 0.3,
    seed: int = 0,
    name: str = "synthetic",
) -> InteractionLog:
    """A view/cart/buy log (target ``buy``) with timestamps (unix seconds) and item categories."""
    rng = np.random.default_rng(seed)
    topic_of_item = rng.integers(0, n_topics, size=n_items)
    topic_of_item[:n_topics] = np.arange(min(n_topics, n_items))  # every topic has an item
    item_pop = _power_law_weights(n_items, item_exponent, rng)
    user_act = _power_law_weights(n_users, user_exponent, rng)
    prefs = rng.dirichlet(np.full(n_topics, concentration), size=n_users)

    # every user appears at least 3 times so that leave-one-out has train/valid/test
    base = np.repeat(np.arange(n_users), 3)
    extra = rng.choice(n_users, size=max(0, n_views - len(base)), p=user_act)
    users = np.concatenate([base, extra])
    # topic per view from the user's preferences (inverse-CDF, vectorised)
    cdf = np.cumsum(prefs, axis=1)
    topics = _draw_topics(rng.random(len(users)), cdf, users)
    # item per view: popularity-weighted within the topic (inverse-CDF per topic)
    order = np.argsort(topic_of_item, kind="stable")
    sorted_topics = topic_of_item[order]
    starts = np.searchsorted(sorted_topics, np.arange(n_topics))
    ends = np.searchsorted(sorted_topics, np.arange(n_topics), side="right")
    w = item_pop[order]
    cum = np.cumsum(w)
    lo = np.where(starts > 0, cum[np.maximum(starts - 1, 0)], 0.0)
    hi = cum[ends - 1]
    r = lo[topics] + rng.random(len(users)) * (hi[topics] - lo[topics])
    pos = np.searchsorted(cum, r).clip(starts[topics], ends[topics] - 1)
    items = order[pos]
    t_view = rng.random(len(users)) * days * 86400.0

    carted = rng.random(len(users)) < cart_rate
    c_users, c_items = users[carted], items[carted]
    t_cart = t_view[carted] + rng.random(int(carted.sum())) * 3600.0
    bought = rng.random(len(c_users)) < buy_rate
    direct = rng.random(len(users)) < direct_buy_rate
    b_users = np.concatenate([c_users[bought], users[direct]])
    b_items = np.concatenate([c_items[bought], items[direct]])
    t_buy = np.concatenate(
        [t_cart[bought] + rng.random(int(bought.sum())) * 3600.0, t_view[direct] + 60.0]
    )

    user = np.concatenate([users, c_users, b_users]).astype(np.int64)
    item = np.concatenate([items, c_items, b_items]).astype(np.int64)
    behavior = np.concatenate(
        [np.zeros(len(users)), np.ones(len(c_users)), np.full(len(b_users), 2)]
    ).astype(np.int8)
    ts = np.concatenate([t_view, t_cart, t_buy]) + 1.6e9
    log = InteractionLog(
        user=user,
        item=item,
        behavior=behavior,
        behaviors=("view", "cart", "buy"),
        target="buy",
        user_map=IdMap.range(n_users),
        item_map=IdMap.range(n_items),
        timestamp=ts,
        category=topic_of_item[item].astype(np.int64),
        category_map=IdMap.range(n_topics),
        name=name,
        source=f"polyrec.data.synthetic(seed={seed})",
    )
    return log
