#!/usr/bin/env python3
"""Writes the outcome of every node of dbt-utils' integration tests under
ferry, with the reason for each node that does not pass, to stdout: the list
that tests/it/dbt_utils.rs holds ferry to (tests/fixtures/dbt_utils_outcomes.txt).

usage: scripts/dbt_utils_outcomes.py PROJECT_DIR FERRY_BINARY > tests/fixtures/dbt_utils_outcomes.txt

PROJECT_DIR is a copy of ../shared/dbt/dbt-utils/integration_tests with
`ferry deps` run and a profiles.yml (the test writes a SQLite one). The
reasons come from ferry's diagnostics, grouped by the rules below; a reason
that no rule matches is printed as `other:` and should get a rule.
"""
import json, re, subprocess, sys, collections
proj = sys.argv[1]
out = subprocess.run([sys.argv[2], "build", "--no-load", "--format", "json"], cwd=proj, capture_output=True, text=True).stdout
diags = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
why = {}
for d in diags:
    if d["severity"] != "error": continue
    msg = d["message"]
    name = None
    for n in d.get("notes", []):
        m = re.match(r"while rendering `(?:models|tests)/(?:.*/)?([^/]+)\.sql`", n) or re.match(r"while planning `([^`]+)`", n)
        if m: name = m.group(1)
    m = re.match(r"in test `([^`]+)`: (.*)", msg, re.S) or re.match(r"test `([^`]+)` could not run: (.*)", msg, re.S) or re.match(r"`([^`]+)` failed while running: (.*)", msg, re.S)
    if m: name, msg = m.group(1), m.group(2)
    f = d.get("file") or ""
    if name is None and f.startswith("models/") and f.endswith(".sql"):
        name = f.rsplit("/", 1)[1][:-4]
    if name: why.setdefault(name, msg)
def reason(msg):
    rules = [
        (r"get_columns_in_relation", "needs adapter.get_columns_in_relation: relation introspection while rendering (not built)"),
        (r"statement|load_result|run_query|load_relation|get_tables_by|undefined is not callable", "needs run_query / statement / load_relation: queries while rendering (not built)"),
        (r"modules\.|undefined value", "needs modules.re / modules.datetime or another dbt context member (not built)"),
        (r"unknown keyword argument", "the macro reads **kwargs, which minijinja macros do not take"),
        (r"Decimal128", "DataFusion cannot compare decimals of different precision (Decimal128(28,0) vs (29,6))"),
        (r"coalesce", "DataFusion cannot coalesce a date with text"),
        (r"invalid function 'mod'", "DataFusion has no mod() function"),
        (r"Error parsing timestamp", "a seed timestamp without seconds ('2021-01-01 00:00') does not parse"),
        (r"has no method named append", "list built by a filter, not a {% set %} literal, cannot change in place"),
        (r"is required for", "the macro reads its arguments through **kwargs, which minijinja macros do not take"),
        (r"information_schema", "needs the warehouse's information_schema (relations by pattern or prefix), which ferry's catalog does not offer"),
        (r"^Got \d+ results?", "the test's verdict differs from dbt's on PostgreSQL (not examined yet)"),
    ]
    for pat, text in rules:
        if re.search(pat, msg): return text
    return "other: " + msg.splitlines()[0][:120]
r = json.load(open(f"{proj}/.ferry/run_results.json"))["results"]
lines = []
for x in sorted(r, key=lambda x: x["unique_id"]):
    st, uid = x["status"], x["unique_id"]
    short = uid.split(".", 2)[2]
    if st in ("success", "pass"):
        lines.append(f"{st} {uid}")
    elif st == "skipped":
        lines.append(f"{st} {uid}  # {x.get('message','')}")
    else:
        lines.append(f"{st} {uid}  # {reason(why.get(short, x.get('message') or ''))}")
print("\n".join(lines))
c = collections.Counter(l.split()[0] for l in lines)
print(c, file=sys.stderr)
cc = collections.Counter(l.split("# ",1)[1] for l in lines if l.startswith("error"))
for k,v in cc.most_common(): print(v, k, file=sys.stderr)
