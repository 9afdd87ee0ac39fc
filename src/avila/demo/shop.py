"""The demo shop and its visitors (:mod:`avila.demo.ecommerce`): the products and their
categories, the visitors' devices and places, referrers, landing pages and searches, and the
traffic weights by hour of day and weekday."""

from __future__ import annotations

# (name, price, category). The first 20 keep their ids (prod_000..prod_019) from earlier demos.
_CATALOGUE = [
    ("Camiseta Básica", 49.9, "moda"),
    ("Tênis Corrida", 299.0, "esporte"),
    ("Mochila Urbana", 189.9, "moda"),
    ("Fone Bluetooth", 159.0, "tecnologia"),
    ("Garrafa Térmica", 79.9, "esporte"),
    ("Relógio Smart", 599.0, "tecnologia"),
    ("Boné Aba Curva", 59.9, "moda"),
    ("Jaqueta Corta-vento", 249.0, "esporte"),
    ("Óculos de Sol", 139.0, "moda"),
    ("Carregador Rápido", 89.9, "tecnologia"),
    ("Caneca Cerâmica", 34.9, "casa"),
    ("Livro: Dados na Prática", 69.0, "livros"),
    ("Teclado Mecânico", 429.0, "tecnologia"),
    ("Mouse Sem Fio", 119.0, "tecnologia"),
    ("Cadeira Gamer", 1299.0, "tecnologia"),
    ("Luminária LED", 99.9, "casa"),
    ("Kit Café Especial", 149.0, "casa"),
    ("Tapete Yoga", 129.0, "esporte"),
    ("Squeeze Esportivo", 39.9, "esporte"),
    ("Meia Esportiva (3 pares)", 44.9, "esporte"),
    ("Shorts de Corrida", 89.9, "esporte"),
    ("Webcam Full HD", 249.0, "tecnologia"),
    ("Moedor de Café", 199.0, "casa"),
    ("Prensa Francesa", 119.0, "casa"),
    ("Chaleira Elétrica", 159.0, "casa"),
    ("Vela Aromática", 49.9, "casa"),
    ("Manta de Sofá", 129.0, "casa"),
    ("Calça Jeans", 179.0, "moda"),
    ("Moletom Canguru", 159.0, "moda"),
    ("Carteira de Couro", 99.0, "moda"),
    ("Cinto de Couro", 79.0, "moda"),
    ("Livro: Python Avançado", 89.0, "livros"),
    ("Livro: Estatística sem Medo", 79.0, "livros"),
    ("Livro: Receitas do Brasil", 99.0, "livros"),
    ("Caderno Pontilhado", 39.9, "livros"),
    ("Caneta Tinteiro", 149.0, "livros"),
    ("Luminária de Leitura", 89.9, "livros"),
    ("Marcador de Páginas", 19.9, "livros"),
    ("Hub USB-C", 139.0, "tecnologia"),
    ("Faixa Elástica", 49.9, "esporte"),
    ("Bermuda de Ciclismo", 139.0, "esporte"),
    ("Luvas de Treino", 59.9, "esporte"),
    ("Monitor 27 polegadas", 1499.0, "tecnologia"),
    ("SSD Externo 1 TB", 549.0, "tecnologia"),
    ("Jogo de Toalhas", 119.0, "casa"),
    ("Difusor de Aromas", 89.9, "casa"),
    ("Vestido Midi", 199.0, "moda"),
    ("Sandália de Couro", 169.0, "moda"),
    ("Livro: SQL para Análise", 79.0, "livros"),
    ("Capa para Leitor Digital", 69.9, "livros"),
    ("Ração Premium 3 kg", 129.0, "pets"),
    ("Arranhador para Gatos", 149.0, "pets"),
    ("Coleira Ajustável", 39.9, "pets"),
    ("Cama Pet", 159.0, "pets"),
    ("Brinquedo de Corda", 24.9, "pets"),
    ("Comedouro Inox", 44.9, "pets"),
    ("Shampoo Pet", 34.9, "pets"),
    ("Caixa de Transporte", 189.0, "pets"),
    ("Petisco Natural", 19.9, "pets"),
    ("Tapete Higiênico", 59.9, "pets"),
]
PRODUCTS = [(f"prod_{i:03d}", name, price) for i, (name, price, _) in enumerate(_CATALOGUE)]
CATEGORIES: dict[str, list[int]] = {}
for _index, _entry in enumerate(_CATALOGUE):
    CATEGORIES.setdefault(_entry[2], []).append(_index)
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
