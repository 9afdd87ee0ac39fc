"""A deterministic, realistic e-commerce dataset written through the ingestion path.

What it contains, so analytics and models have something true to find:

- users who sign up across the period (and some who were there before it), each with a
  device, browser, country and city, and a personal visit rate;
- weekly and daily seasonality (more visits in the evening and at weekends);
- sessions that start at ``/`` or a landing page and walk the funnel
  ``/`` → ``/product`` (with a ProductView) → AddToCart → Checkout → Purchase with drop-off at
  each step; searches, logins and custom events along the way;
- repeat buyers (a per-user purchase propensity, Beta(0.8, 2): habitual buyers and window
  shoppers) and popular products (Zipf); abandoned carts that bring 90 % of their users back
  to buy within three days (a conversion driver beyond recency);
- product tastes: 60 products in 6 categories; each user prefers one or two categories and
  draws 85 % of product views from them (what item-kNN finds and popularity cannot);
- churners: users stop visiting at some day, after their visit rate decays over the two
  weeks before; people who rarely buy or who bounce a lot (low engagement) leave more often,
  and 70 % of the users whose payment fails (checkout without purchase) quit within days;
  personal visit rates spread widely, so recency alone confuses quiet regulars with leavers
  (the planted signals churn models should find beyond recency);
- search intent: sessions with a search cart and buy more often (for the session model);
- an anomaly: a flash sale at 15:00 UTC two days before the end brings half of the active
  users in one hour (:func:`flash_sale_hour`; the seasonal detector should flag it).

The same ``seed``, ``users``, ``days`` and ``end`` always give the same events, ids included,
so running the demo twice stores nothing new (ingestion is idempotent on event_id).
"""

from __future__ import annotations

import asyncio
import math
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from avila.demo.shop import (
    CATEGORIES,
    DEVICES,
    HOURS,
    LANDINGS,
    PLACES,
    PRODUCTS,
    REFERRERS,
    SEARCHES,
    WEEKDAYS,
)

#: Share of product views drawn from the user's own categories (the planted tastes).
TASTE_SHARE = 0.85
#: Churn drivers beyond recency. The base chance of leaving falls with the user's purchase
#: propensity (0.9 per unit) and engagement (this much per unit); clipped to [0.05, 0.8].
CHURN_BASE = 0.85
CHURN_ENGAGEMENT = 0.5
#: Spread (log-normal sigma) of personal visit rates: a quiet regular and a lapsing heavy
#: user can have the same recency, which only the user's own rhythm tells apart.
RATE_SPREAD = 1.2
#: A failed payment (checkout without purchase) drives this share of users away within days.
QUIT_AFTER_FAILED_PAYMENT = 0.7
#: An abandoned cart (no checkout, not removed) brings the user back to buy it this often.
CART_RETURN = 0.9
#: Purchase propensity ~ Beta(BUY_A, BUY_B): habitual buyers and window shoppers.
BUY_A, BUY_B = 0.8, 2.0

_encode = msgspec.json.encode


@dataclass
class Persona:
    user_id: str
    device: tuple[str, str, str, float]
    place: tuple[str, str, str, float]
    signup: datetime
    visits_per_day: float
    buy_propensity: float
    churn_at: datetime | None
    #: How much the shop suits the user (0..1): engaged users bounce less and churn less.
    engagement: float = 0.5
    tastes: tuple[str, ...] = ()
    #: Set when a failed payment drives the user away (sudden churn, no slowdown before).
    quit_at: datetime | None = None
    #: Carts left without checkout that the user comes back to buy: (when, product, quantity).
    returns: list[tuple[datetime, tuple[str, str, float], int]] = field(default_factory=list)


def _pick(rng: random.Random, weighted: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    return rng.choices(weighted, weights=[w[-1] for w in weighted], k=1)[0]


def _personas(rng: random.Random, users: int, start: datetime, end: datetime) -> list[Persona]:
    span = (end - start).total_seconds()
    people = []
    for i in range(users):
        # 30 % were customers before the period; the rest sign up during it.
        signup = (
            start - timedelta(days=rng.uniform(1, 60))
            if rng.random() < 0.3
            else start + timedelta(seconds=rng.uniform(0, span * 0.9))
        )
        buy_propensity = min(0.9, rng.betavariate(BUY_A, BUY_B))
        engagement = rng.betavariate(2, 2)
        # Churn drivers: people who rarely buy or bounce a lot leave more often.
        churn_at = None
        leave = CHURN_BASE - 0.9 * buy_propensity - CHURN_ENGAGEMENT * engagement
        if rng.random() < min(0.8, max(0.05, leave)):
            churn_at = max(signup, start) + timedelta(seconds=rng.uniform(0.2, 0.9) * span)
        categories = sorted(CATEGORIES)
        tastes = tuple(rng.sample(categories, 2 if rng.random() < 0.3 else 1))
        people.append(
            Persona(
                user_id=f"user_{i:05d}",
                device=_pick(rng, DEVICES),
                place=_pick(rng, PLACES),
                signup=signup,
                visits_per_day=rng.lognormvariate(math.log(0.6), RATE_SPREAD),
                buy_propensity=buy_propensity,
                churn_at=churn_at,
                tastes=tastes,
                engagement=engagement,
            )
        )
    return people


def _context(p: Persona, referrer: str | None) -> dict[str, Any]:
    device_type, os_name, browser, _ = p.device
    country, city, tz, _ = p.place
    width, height = (
        (1920, 1080)
        if device_type == "Desktop"
        else (390, 844)
        if device_type == "Mobile"
        else (820, 1180)
    )
    return {
        "device": {
            "device_type": device_type,
            "os": os_name,
            "browser": browser,
            "screen_resolution": [width, height],
        },
        "location": {"country": country, "city": city, "timezone": tz},
        "referrer": referrer,
        "user_agent": f"Mozilla/5.0 ({os_name}) {browser}",
        "viewport": {"width": width, "height": height},
    }


def _product(rng: random.Random, p: Persona) -> int:
    """Index into PRODUCTS: mostly from the user's categories, else the global best sellers
    (Zipf-like in both cases)."""
    if p.tastes and rng.random() < TASTE_SHARE:
        shelf = CATEGORIES[rng.choice(p.tastes)]
        return shelf[min(len(shelf) - 1, int(rng.paretovariate(1.0)) - 1)]
    return min(len(PRODUCTS) - 1, int(rng.paretovariate(1.2)) - 1)


def _session(
    rng: random.Random,
    p: Persona,
    at: datetime,
    number: int,
    seed: int,
    new_user: bool,
    end: datetime,
    landing: str | None = None,
) -> list[bytes]:
    events: list[bytes] = []
    session_id = f"sess_{seed}_{p.user_id}_{number}"
    context = _context(p, rng.choice(REFERRERS))
    t = at

    def emit(kind: str, data: dict[str, Any]) -> None:
        nonlocal t
        if t >= end:  # the dataset stops at `end`; a session running past it is cut there
            return
        events.append(
            _encode(
                {
                    "event_id": f"demo-{seed}-{p.user_id}-{number}-{len(events)}",
                    "user_id": p.user_id,
                    "session_id": session_id,
                    "timestamp": t.isoformat().replace("+00:00", "Z"),
                    "event_type": {"type": kind, "data": data},
                    "metadata": {"source": "demo"},
                    "context": context,
                }
            )
        )
        t += timedelta(seconds=rng.uniform(8, 110))

    def purchase(product_id: str, price: float, quantity: int) -> None:
        emit(
            "Purchase",
            {
                "order_id": f"order_{seed}_{p.user_id}_{number}_{len(events)}",
                "revenue": round(price * quantity, 2),
                "currency": "BRL",
                "items": [{"product_id": product_id, "quantity": quantity, "price": price}],
            },
        )

    if landing == "/cart" and p.returns:
        _, (product_id, _, price), quantity = p.returns.pop(0)
        emit("PageView", {"url": "/cart", "title": "Carrinho"})
        emit("Checkout", {"cart_value": round(price * quantity, 2), "currency": "BRL"})
        purchase(product_id, price, quantity)
        return events
    if number == 0 and new_user:
        emit("SignUp", {"method": rng.choice(["email", "google"])})
    landing = landing or rng.choice(LANDINGS)
    emit("PageView", {"url": landing, "title": "Avila Store"})
    if rng.random() < 0.2:
        emit("Login", {"method": "password"})
    # Search intent: sessions with a search buy more often (what a session model can see
    # beyond the funnel stage).
    searched = rng.random() < 0.25
    if searched:
        emit("Search", {"query": rng.choice(SEARCHES), "results_count": rng.randint(0, 40)})
    if landing.startswith("/promo") or rng.random() < 0.25 + 0.6 * p.engagement:  # else bounce
        emit("PageView", {"url": "/products", "title": "Produtos"})
        for _ in range(1 + int(rng.expovariate(0.8))):
            product_id, name, price = PRODUCTS[_product(rng, p)]
            emit("PageView", {"url": "/product", "title": name})
            emit("ProductView", {"product_id": product_id, "price": price})
            if rng.random() < 0.2 + p.buy_propensity * 0.4 + 0.2 * searched:
                quantity = 1 if rng.random() < 0.8 else 2
                emit("AddToCart", {"product_id": product_id, "quantity": quantity, "price": price})
                if rng.random() < 0.55:
                    emit("Checkout", {"cart_value": round(price * quantity, 2), "currency": "BRL"})
                    if rng.random() < 0.3 + p.buy_propensity * 0.5 + 0.25 * searched:
                        purchase(product_id, price, quantity)
                        break
                    # Churn driver: a failed checkout drives some users away within days.
                    if p.quit_at is None and rng.random() < QUIT_AFTER_FAILED_PAYMENT:
                        p.quit_at = t + timedelta(days=rng.uniform(0.5, 3))
                    break
                elif rng.random() < 0.2:
                    emit("RemoveFromCart", {"product_id": product_id, "quantity": quantity})
                elif rng.random() < CART_RETURN:
                    # Conversion driver: an open cart brings the user back to buy it.
                    back = t + timedelta(days=rng.uniform(0.3, 3))
                    p.returns.append((back, (product_id, name, price), quantity))
                    break
    if rng.random() < 0.05:
        emit("Custom", {"name": "newsletter_signup", "properties": {"placement": "footer"}})
    if rng.random() < 0.1:
        emit("Logout", {})
    return events


def generate_user_events(seed: int, users: int, days: int, end: datetime) -> Iterator[list[bytes]]:
    """Per user, the seed-format event JSON (bytes) in time order. Deterministic."""
    start = end - timedelta(days=days)
    flash = flash_sale_hour(end) if days >= 10 else None
    rng = random.Random(seed)
    for persona in _personas(rng, users, start, end):
        urng = random.Random(f"{seed}:{persona.user_id}")
        events: list[bytes] = []
        first_day = max(persona.signup, start).replace(hour=0, minute=0, second=0, microsecond=0)
        day = first_day
        number = 0
        while day < end:
            stop = persona.churn_at
            if persona.quit_at is not None and (stop is None or persona.quit_at < stop):
                stop = persona.quit_at
            if stop is not None and day >= stop:
                break
            rate = persona.visits_per_day * WEEKDAYS[day.weekday()]
            if stop is not None and stop == persona.churn_at:
                # Activity decays over the two weeks before churn: the planted signal.
                days_left = (stop - day).total_seconds() / 86400
                rate *= min(1.0, max(0.15, days_left / 14))
            for _ in range(_poisson(urng, rate)):
                hour = urng.choices(range(24), weights=HOURS, k=1)[0]
                at = day + timedelta(hours=hour, seconds=urng.uniform(0, 3600))
                if at < max(persona.signup, start) or at >= end or (stop and at >= stop):
                    continue
                events.extend(
                    _session(urng, persona, at, number, seed, persona.signup >= start, end)
                )
                number += 1
            persona.returns.sort(key=lambda r: r[0])
            while persona.returns and persona.returns[0][0] < day + timedelta(days=1):
                at = persona.returns[0][0]
                if at >= end or (stop and at >= stop):
                    persona.returns.pop(0)
                    continue
                events.extend(_session(urng, persona, at, number, seed, False, end, "/cart"))
                number += 1
            if flash is not None and day <= flash < day + timedelta(days=1):
                # The planted anomaly: a flash-sale e-mail brings half of the active users
                # to the promo page within one hour.
                at = flash + timedelta(seconds=urng.uniform(0, 3000))
                if urng.random() < 0.5 and persona.signup <= at and not (stop and at >= stop):
                    events.extend(
                        _session(urng, persona, at, number, seed, False, end, "/promo/flash-sale")
                    )
                    number += 1
            day += timedelta(days=1)
        if events:
            yield events


def flash_sale_hour(end: datetime) -> datetime:
    """The planted traffic anomaly: 15:00 UTC two days before ``end``."""
    return (end - timedelta(days=2)).replace(hour=15, minute=0, second=0, microsecond=0)


def _poisson(rng: random.Random, lam: float) -> int:
    threshold, k, product = math.exp(-lam), 0, rng.random()
    while product > threshold:
        k += 1
        product *= rng.random()
    return k


def default_end() -> datetime:
    """The current hour, UTC: the demo reaches up to now, so "last 30 days" shows it."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def parse_end(text: str | None) -> datetime:
    if not text:
        return default_end()
    return (
        datetime.fromisoformat(text).replace(tzinfo=UTC)
        if len(text) == 10
        else datetime.fromisoformat(text)
    )


def run_demo(
    settings: object,
    *,
    users: int,
    days: int,
    seed: int,
    end: str | None,
    project: str,
    if_empty: bool,
) -> int:
    """``avila demo``: write the dataset through the ingestion path into the configured store."""
    from tqdm import tqdm

    from avila.ingest.service import IngestService
    from avila.storage import open_store

    store = open_store(settings.storage_url, lock_wait=1.0)  # type: ignore[attr-defined]
    try:
        if if_empty and store.query("SELECT count(*) FROM events")[0][0] > 0:
            print("avila demo: the store already has events; nothing to do", file=sys.stderr)
            return 0
        end_at = parse_end(end)

        async def write() -> tuple[int, int, int]:
            service = IngestService(store)
            await service.start()
            accepted = duplicates = rejected = 0
            pending: list[bytes] = []
            try:
                with tqdm(total=users, unit="user", desc="demo", file=sys.stderr) as bar:
                    for events in generate_user_events(seed, users, days, end_at):
                        pending.extend(events)
                        bar.update(1)
                        if len(pending) >= 5000:
                            result = await service.ingest(pending, project)
                            accepted, duplicates = (
                                accepted + result.accepted,
                                duplicates + result.duplicates,
                            )
                            rejected += len(result.rejected)
                            pending = []
                    if pending:
                        result = await service.ingest(pending, project)
                        accepted, duplicates = (
                            accepted + result.accepted,
                            duplicates + result.duplicates,
                        )
                        rejected += len(result.rejected)
                    bar.update(users - bar.n)
            finally:
                await service.close()
            return accepted, duplicates, rejected

        accepted, duplicates, rejected = asyncio.run(write())
        print(
            f"avila demo: {accepted} events stored, {duplicates} already present, {rejected} rejected "
            f"(project {project}, {users} users, {days} days to {end_at:%Y-%m-%d %H:%M} UTC, seed {seed})",
            file=sys.stderr,
        )
        return 0 if rejected == 0 else 1
    finally:
        store.close()
