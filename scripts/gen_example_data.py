#!/usr/bin/env python3
"""Generate the legacy-CRM exports of the bundled example migration.

Deterministic (fixed seed): the same SCALE always gives the same files, so
the committed data can be regenerated and large versions made for
benchmarks. The exports carry the mess a real legacy CRM has: customers
entered twice, country names spelled five ways, DD/MM/YYYY dates, names in
one field, amounts in cents, blanks where values are missing.

usage: gen_example_data.py OUT_DIR [SCALE]   (SCALE 1 = 500 customers)
"""
import csv
import os
import random
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "data/legacy"
scale = int(sys.argv[2]) if len(sys.argv) > 2 else 1
rnd = random.Random(20261121)
os.makedirs(out, exist_ok=True)

FIRST = ["Ann", "Bob", "Chloé", "Dieter", "Eve", "Farah", "Giulia", "Hiro", "Ines", "João", "Kai", "Lena",
         "Marta", "Nils", "Olga", "Pedro", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Viktor", "Wen", "Zoë"]
LAST = ["Smith", "Müller", "García", "Rossi", "Dubois", "Kowalski", "Nakamura", "Silva", "Jensen",
        "O'Brien", "van Dijk", "Novak", "Ivanova", "Chen", "Andersson", "Papadopoulos"]
COUNTRIES = {  # canonical ISO code -> the spellings the legacy CRM holds
    "GB": ["UK", "United Kingdom", "GB", "england", "U.K."],
    "DE": ["Germany", "DE", "Deutschland", "germany"],
    "FR": ["France", "FR", "france "],
    "US": ["USA", "United States", "US", "U.S.A."],
    "NL": ["Netherlands", "NL", "Holland"],
}
TYPES = ["P", "B", "V", "L", "X"]  # X is unknown to the lookup seed: mapped to a default
ACCOUNT_STATUS = ["active", "ACTIVE", "closed", "suspended", ""]
ORDER_STATUS = ["paid", "shipped", "cancelled", "refunded"]


def ddmmyyyy(day_offset):
    y, rest = divmod(day_offset, 365)
    m, d = divmod(rest, 28)
    return f"{d + 1:02d}/{(m % 12) + 1:02d}/{2015 + y}"


n_customers = 500 * scale
customers = []
for cid in range(1, n_customers + 1):
    first, last = rnd.choice(FIRST), rnd.choice(LAST)
    iso = rnd.choice(list(COUNTRIES))
    row = {
        "cust_id": cid,
        "full_name": f"{first} {last}",
        "email": f"{first}.{last}{cid}@example.com".lower().replace("'", "").replace(" ", ""),
        "country": rnd.choice(COUNTRIES[iso]),
        "signup_date": ddmmyyyy(rnd.randrange(0, 3000)),
        "cust_type": rnd.choice(TYPES),
        "phone": "" if rnd.random() < 0.15 else f"+44 20 {rnd.randrange(1000, 9999)} {rnd.randrange(1000, 9999)}",
        "updated_at": f"2024-{rnd.randrange(1, 13):02d}-{rnd.randrange(1, 29):02d} 10:00:00",
    }
    customers.append(row)
    if rnd.random() < 0.04:  # entered twice: same id, later update, email in upper case
        dup = dict(row, email=row["email"].upper(), updated_at=row["updated_at"].replace("2024", "2025"))
        customers.append(dup)

with open(os.path.join(out, "customers.csv"), "w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, fieldnames=list(customers[0]))
    w.writeheader()
    w.writerows(customers)

accounts = []
for aid in range(1, int(n_customers * 1.2) + 1):
    accounts.append({
        "acct_id": 10_000 + aid,
        "cust_id": rnd.randrange(1, n_customers + 1),
        "acct_name": f"Account {aid}",
        "status": rnd.choice(ACCOUNT_STATUS),
        "opened": ddmmyyyy(rnd.randrange(0, 3000)),
    })
with open(os.path.join(out, "accounts.csv"), "w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, fieldnames=list(accounts[0]))
    w.writeheader()
    w.writerows(accounts)

with open(os.path.join(out, "orders.csv"), "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["order_no", "acct_id", "order_date", "amount_cents", "currency", "status"])
    for oid in range(1, n_customers * 4 + 1):
        acct = rnd.choice(accounts)["acct_id"]
        date = f"20{rnd.randrange(18, 25)}-{rnd.randrange(1, 13):02d}-{rnd.randrange(1, 29):02d} {rnd.randrange(0, 24):02d}:{rnd.randrange(0, 60):02d}:00"
        cents = "" if rnd.random() < 0.01 else rnd.randrange(100, 500_000)
        w.writerow([f"ORD-{oid:07d}", acct, date, cents, rnd.choice(["EUR", "GBP", "USD", ""]), rnd.choice(ORDER_STATUS)])

print(f"wrote {len(customers)} customers, {len(accounts)} accounts, {n_customers * 4} orders to {out}", file=sys.stderr)
