#!/usr/bin/env python3
"""Writes data/listings.csv: marketplace listings shaped like seed 001's prediction payload
(its 16 fields) plus a target, `sold`, with real signal, for `sluice ml train auto`.

Deterministic (a fixed seed), standard library only:
    python3 scripts/make-listings.py [ROWS] > data/listings.csv

How `sold` comes about (so a model has something to find): a listing's log-odds of selling
rise with free shipping, a premium listing type, Mercado Pago, local pickup and a low price
for its stock, and fall with age (`date_difference_hr`); the outcome is drawn from that
probability, so no model can be perfect. About 2 % of the cells of optional fields are empty
(null), as real exports are.
"""

import csv
import math
import random
import sys

STATES = {
    "SP": ["Sao Paulo", "Campinas", "Santos", "Guarulhos"],
    "RJ": ["Rio de Janeiro", "Niteroi", "Petropolis"],
    "MG": ["Belo Horizonte", "Uberlandia", "Contagem"],
    "RS": ["Porto Alegre", "Caxias do Sul"],
    "PR": ["Curitiba", "Londrina"],
    "BA": ["Salvador", "Feira de Santana"],
    "SC": ["Florianopolis", "Joinville"],
    "CE": ["Fortaleza"],
}
STATE_WEIGHTS = [40, 15, 12, 8, 8, 6, 6, 5]
SHIPPING = ["standard", "me2", "custom", "not_specified"]
LISTING = ["bronze", "silver", "gold", "gold_special", "gold_premium", "free"]
LISTING_EFFECT = {"bronze": -0.3, "silver": 0.0, "gold": 0.2, "gold_special": 0.5,
                  "gold_premium": 0.7, "free": -0.8}
BUYING = ["buy_it_now", "classified", "auction"]
STATUS = ["active", "paused", "closed"]

FIELDS = ["state", "city", "local_pickup", "free_shipping", "shipping_mode", "listing_type",
          "buying_mode", "status", "accepts_mercadopago", "currency", "automatic_relist",
          "stock_quantity", "available_quantity", "total_amount", "date_difference_hr",
          "time_difference_hr", "sold"]
OPTIONAL = {"city", "shipping_mode", "total_amount", "time_difference_hr"}


def listing(rng):
    state = rng.choices(list(STATES), weights=STATE_WEIGHTS)[0]
    stock = rng.choice([1, 1, 2, 3, 5, 10, 10, 20, 50, 100])
    available = rng.randint(0, stock)
    amount = round(math.exp(rng.gauss(4.5, 1.1)), 2)
    row = {
        "state": state,
        "city": rng.choice(STATES[state]),
        "local_pickup": rng.random() < 0.6,
        "free_shipping": rng.random() < 0.35,
        "shipping_mode": rng.choices(SHIPPING, weights=[30, 55, 10, 5])[0],
        "listing_type": rng.choices(LISTING, weights=[30, 15, 10, 25, 10, 10])[0],
        "buying_mode": rng.choices(BUYING, weights=[85, 10, 5])[0],
        "status": rng.choices(STATUS, weights=[85, 10, 5])[0],
        "accepts_mercadopago": rng.random() < 0.9,
        "currency": "BRL" if rng.random() < 0.97 else "USD",
        "automatic_relist": rng.random() < 0.2,
        "stock_quantity": stock,
        "available_quantity": available,
        "total_amount": amount,
        "date_difference_hr": round(rng.expovariate(1 / 72), 1),
        "time_difference_hr": round(rng.uniform(0, 24), 1),
    }
    odds = (-0.4
            + 1.1 * row["free_shipping"]
            + LISTING_EFFECT[row["listing_type"]]
            + 0.6 * row["accepts_mercadopago"]
            + 0.3 * row["local_pickup"]
            - 0.45 * (math.log(amount) - 4.5)
            + 0.25 * math.log1p(stock - available)
            - 0.008 * row["date_difference_hr"]
            - (1.5 if row["status"] == "closed" else 0.0))
    row["sold"] = rng.random() < 1 / (1 + math.exp(-odds))
    for field in OPTIONAL:
        if rng.random() < 0.02:
            row[field] = None
    return row


def cell(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def main():
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rng = random.Random(1)
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(FIELDS)
    for _ in range(rows):
        row = listing(rng)
        out.writerow([cell(row[f]) for f in FIELDS])


if __name__ == "__main__":
    main()
