"""Rewrite a synthetic project (shared/bench/gen_synth_project.py) so that
every model calls dbt_utils: `dbt_utils.star(ref(...))` for what it reads and
`dbt_utils.generate_surrogate_key([...])` for a key it adds. The package is
installed from a local copy of dbt-utils (`local:`), so `ferry deps` and
`dbt deps` need no network.

usage: synth_dbt_utils.py PROJECT_DIR DBT_UTILS_DIR
"""
import os
import re
import sys

project, utils = sys.argv[1], os.path.abspath(sys.argv[2])
with open(f"{project}/packages.yml", "w") as f:
    f.write(f"packages:\n  - local: {utils}\n")

# Columns every model adds on top of what it reads.
added = "['sk', 'amount', 'is_a', 'is_b', 'is_c']"
models = f"{project}/models"
for name in sorted(os.listdir(models)):
    if not name.endswith(".sql"):
        continue
    path = f"{models}/{name}"
    sql = open(path).read()
    one = re.search(r"select id, amount_cents, kind from \{\{ ref\('(\w+)'\) \}\}", sql)
    two = re.search(r"from \{\{ ref\('(\w+)'\) \}\} x join \{\{ ref\('(\w+)'\) \}\} y on x.id = y.id", sql)
    if one:
        up = one.group(1)
        except_ = "[]" if up == "base" else added
        body = f"select {{{{ dbt_utils.star(ref('{up}'), except={except_}) }}}} from {{{{ ref('{up}') }}}}"
        sql = sql.replace(one.group(0), body)
    elif two:
        a, b = two.groups()
        body = (
            f"select {{{{ dbt_utils.star(ref('{a}'), relation_alias='x', except={added[:-1]}, 'amount_cents']) }}}},"
            f" x.amount_cents + y.amount_cents as amount_cents\n"
            f"from {{{{ ref('{a}') }}}} x join {{{{ ref('{b}') }}}} y on x.id = y.id"
        )
        start = sql.index("select x.id")
        sql = sql[:start] + body + sql[two.end():]
    else:
        sys.exit(f"{path}: not a model this script knows how to rewrite")
    sql = sql.replace(
        "select id, amount_cents, kind,\n",
        "select {{ dbt_utils.generate_surrogate_key(['id', 'kind']) }} as sk, id, amount_cents, kind,\n",
        1,
    )
    with open(path, "w") as f:
        f.write(sql)
