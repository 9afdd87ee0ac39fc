"""A deterministic, realistic e-commerce dataset written through the ingestion path.

What it contains, so analytics and models have something true to find:

- users who sign up across the period (and some who were there before it), each with a
  device, browser, country and city, and a personal visit rate;
- weekly and daily seasonality (more visits in the evening and at weekends);
- sessions that start at ``/`` or a landing page and walk the funnel
  ``/`` → ``/product`` (with a ProductView) → AddToCart → Checkout → Purchase with drop-off at
  each step; searches, logins and custom events along the way;
- repeat buyers (a per-user purchase propensity) and popular products (Zipf);
- churners: about a quarter of users stop visiting at some day, after their visit rate decays
  over the two weeks before (the planted signal churn models should find).

The same ``seed``, ``users``, ``days`` and ``end`` always give the same events, ids included,
so running the demo twice stores nothing new (ingestion is idempotent on event_id).
"""

from __future__ import annotations

import asyncio
import math
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec

PRODUCTS = [
    (f"prod_{i:03d}", name, price)
    for i, (name, price) in enumerate(
        [
            ("Camiseta Básica", 49.9),
            ("Tênis Corrida", 299.0),
            ("Mochila Urbana", 189.9),
            ("Fone Bluetooth", 159.0),
            ("Garrafa Térmica", 79.9),
            ("Relógio Smart", 599.0),
            ("Boné Aba Curva", 59.9),
            ("Jaqueta Corta-vento", 249.0),
            ("Óculos de Sol", 139.0),
            ("Carregador Rápido", 89.9),
            ("Caneca Cerâmica", 34.9),
            ("Livro: Dados na Prática", 69.0),
            ("Teclado Mecânico", 429.0),
            ("Mouse Sem Fio", 119.0),
            ("Cadeira Gamer", 1299.0),
            ("Luminária LED", 99.9),
            ("Kit Café Especial", 149.0),
            ("Tapete Yoga", 129.0),
            ("Squeeze Esportivo", 39.9),
            ("Meia Esportiva (3 pares)", 44.9),
        ]
    )
]
DEVICES = [
    ("Desktop", "Windows", "Chrome", 0.34),
    ("Desktop", "macOS", "Safari", 0.10),
    ("Mobile", "Android", "Chrome", 0.33),
    ("Mobile", "iOS", "Safari", 0.17),
    ("Tablet", "iPadOS", "Safari", 0.03),
    ("Desktop", "Linux", "Firefox", 0.03),
]
PLACES = [
    ("BR", "São Paulo", "America/Sao_Paulo", 0.35),
    ("BR", "Rio de Janeiro", "America/Sao_Paulo", 0.18),
    ("BR", "Belo Horizonte", "America/Sao_Paulo", 0.1),
    ("BR", "Manaus", "America/Manaus", 0.05),
    ("PT", "Lisboa", "Europe/Lisbon", 0.08),
    ("US", "Miami", "America/New_York", 0.08),
    ("AR", "Buenos Aires", "America/Argentina/Buenos_Aires", 0.08),
    ("DE", "München", "Europe/Berlin", 0.08),
]
REFERRERS = [
    None,
    None,
    "https://www.google.com/",
    "https://www.instagram.com/",
    "https://t.co/",
    "https://news.ycombinator.com/",
]
LANDINGS = ["/", "/", "/", "/products", "/promo/black-friday", "/blog/guia-de-corrida"]
SEARCHES = ["tênis", "fone", "café", "mochila", "presente", "relógio"]
# Hour-of-day weights (UTC-3 shifted evening peak), and weekday weights (Mon..Sun).
HOURS = [
    0.3,
    0.2,
    0.1,
    0.1,
    0.1,
    0.2,
    0.4,
    0.7,
    0.9,
    1.0,
    1.0,
    1.1,
    1.2,
    1.1,
    1.0,
    1.0,
    1.1,
    1.2,
    1.4,
    1.6,
    1.8,
    1.7,
    1.2,
    0.6,
]
WEEKDAYS = [0.9, 0.95, 1.0, 1.0, 1.05, 1.25, 1.3]

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


def _pick(rng: random.Random, weighted: list[tuple]) -> tuple:
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
        churn_at = None
        if rng.random() < 0.25:
            churn_at = max(signup, start) + timedelta(seconds=rng.uniform(0.2, 0.9) * span)
        people.append(
            Persona(
                user_id=f"user_{i:05d}",
                device=_pick(rng, DEVICES),
                place=_pick(rng, PLACES),
                signup=signup,
                visits_per_day=rng.lognormvariate(math.log(0.35), 0.7),
                buy_propensity=min(0.9, rng.betavariate(2, 5)),
                churn_at=churn_at,
            )
        )
    return people


def _context(p: Persona, referrer: str | None) -> dict:
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


def _session(
    rng: random.Random,
    p: Persona,
    at: datetime,
    number: int,
    seed: int,
    new_user: bool,
    end: datetime,
) -> list[bytes]:
    events: list[bytes] = []
    session_id = f"sess_{seed}_{p.user_id}_{number}"
    context = _context(p, rng.choice(REFERRERS))
    t = at

    def emit(kind: str, data: dict) -> None:
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

    if number == 0 and new_user:
        emit("SignUp", {"method": rng.choice(["email", "google"])})
    landing = rng.choice(LANDINGS)
    emit("PageView", {"url": landing, "title": "Avila Store"})
    if rng.random() < 0.2:
        emit("Login", {"method": "password"})
    if rng.random() < 0.25:
        emit("Search", {"query": rng.choice(SEARCHES), "results_count": rng.randint(0, 40)})
    if rng.random() < 0.55:  # bounce otherwise
        emit("PageView", {"url": "/products", "title": "Produtos"})
        for _ in range(1 + int(rng.expovariate(0.8))):
            product_id, name, price = PRODUCTS[
                min(len(PRODUCTS) - 1, int(rng.paretovariate(1.2)) - 1)
            ]
            emit("PageView", {"url": "/product", "title": name})
            emit("ProductView", {"product_id": product_id, "price": price})
            if rng.random() < 0.3 + p.buy_propensity * 0.4:
                quantity = 1 if rng.random() < 0.8 else 2
                emit("AddToCart", {"product_id": product_id, "quantity": quantity, "price": price})
                if rng.random() < 0.55:
                    emit("Checkout", {"cart_value": round(price * quantity, 2), "currency": "BRL"})
                    if rng.random() < 0.45 + p.buy_propensity * 0.5:
                        emit(
                            "Purchase",
                            {
                                "order_id": f"order_{seed}_{p.user_id}_{number}_{len(events)}",
                                "revenue": round(price * quantity, 2),
                                "currency": "BRL",
                                "items": [
                                    {"product_id": product_id, "quantity": quantity, "price": price}
                                ],
                            },
                        )
                        break
                elif rng.random() < 0.2:
                    emit("RemoveFromCart", {"product_id": product_id, "quantity": quantity})
    if rng.random() < 0.05:
        emit("Custom", {"name": "newsletter_signup", "properties": {"placement": "footer"}})
    if rng.random() < 0.1:
        emit("Logout", {})
    return events


def generate_user_events(seed: int, users: int, days: int, end: datetime) -> Iterator[list[bytes]]:
    """Per user, the seed-format event JSON (bytes) in time order. Deterministic."""
    start = end - timedelta(days=days)
    rng = random.Random(seed)
    for persona in _personas(rng, users, start, end):
        urng = random.Random(f"{seed}:{persona.user_id}")
        events: list[bytes] = []
        first_day = max(persona.signup, start).replace(hour=0, minute=0, second=0, microsecond=0)
        day = first_day
        number = 0
        while day < end:
            stop = persona.churn_at
            if stop is not None and day >= stop:
                break
            rate = persona.visits_per_day * WEEKDAYS[day.weekday()]
            if stop is not None:
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
            day += timedelta(days=1)
        if events:
            yield events


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
