#!/usr/bin/env python3
"""Runs a DuckDB peer script with every connection it opens limited to a
memory budget, as ferry's --memory-limit limits ferry.
usage: duckdb_limited.py LIMIT SCRIPT [ARGS...]   (LIMIT such as 4GB)"""
import runpy, sys

import duckdb

limit, script = sys.argv[1], sys.argv[2]
connect = duckdb.connect


def limited(*args, **kwargs):
    config = dict(kwargs.pop("config", None) or {})
    config["memory_limit"] = limit
    return connect(*args, config=config, **kwargs)


duckdb.connect = limited
sys.argv = [script] + sys.argv[3:]
runpy.run_path(script, run_name="__main__")
