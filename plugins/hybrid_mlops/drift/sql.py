"""SQL that flattens one window of capture records, for DuckDB (local) and Athena (aws).

A capture line is ``{"id", "time", "model", "version", "protocol", "inputs": {feature: [...]},
"outputs": {"probability": [...]}}``: one request, columnar, possibly many rows. The SQL splits the
files into lines (so a malformed line is counted, not dropped by the JSON reader), keeps the lines
whose ``inputs`` is an object, and unnests the feature arrays side by side (shorter arrays are
padded with NULL, so no value is lost). Values come out as text; numbers are cast afterwards so a
value that is not a number is counted for the ``data_type_check``.
"""

from __future__ import annotations

import re

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def identifier(name: str) -> str:
    """A bare SQL identifier (Athena database and table names), checked."""
    if not _IDENT.match(name):
        raise ValueError(f"{name!r} must be an Athena identifier ([A-Za-z_][A-Za-z0-9_]*)")
    return name


def literal(text: str) -> str:
    """A SQL string literal (DuckDB and Athena/Trino alike)."""
    return "'" + str(text).replace("'", "''") + "'"


# --------------------------------------------------------------------------------------------- DuckDB


def duckdb_lines(glob: str, *, materialize: bool = True) -> str:
    """``capture_lines(filename, line_no, line, ok)`` from the files matching ``glob``: a temp table, or
    with ``materialize=False`` a view that each query streams from the files (bounded memory)."""
    return f"""
CREATE OR REPLACE TEMP {'TABLE' if materialize else 'VIEW'} capture_lines AS
WITH files AS (
    SELECT filename, replace(content, chr(13), '') AS content FROM read_text({literal(glob)})
), split AS (
    SELECT filename, unnest(string_split(content, chr(10))) AS line,
           generate_subscripts(string_split(content, chr(10)), 1) AS line_no
    FROM files
)
SELECT filename, line_no, line,
       CASE WHEN json_valid(line) THEN coalesce(json_type(line, '$.inputs') = 'OBJECT', false) ELSE false END AS ok
FROM split
WHERE trim(line) <> ''
"""


def duckdb_summary() -> str:
    return """
SELECT count(DISTINCT filename) AS files, count(*) AS lines, count(*) FILTER (WHERE NOT ok) AS malformed
FROM capture_lines
"""


def duckdb_keys() -> str:
    """Feature names present in the window, with the number of records carrying each."""
    return """
SELECT key, count(*) AS records
FROM (SELECT unnest(json_keys(line, '$.inputs')) AS key FROM capture_lines WHERE ok)
GROUP BY key ORDER BY key
"""


def duckdb_malformed_sample(limit: int = 5) -> str:
    return f"""
SELECT filename, line_no, left(line, 200) AS line FROM capture_lines WHERE NOT ok ORDER BY filename, line_no LIMIT {int(limit)}
"""


def _key(name: str) -> str:
    """A JSON path member for any column name (spaces included): ``"name"``."""
    if '"' in name or "'" in name:
        raise ValueError(f"column name {name!r} must not contain quotes")
    return f'"{name}"'


def _col(name: str) -> str:
    return '"' + name + '"'


def duckdb_rows(numeric: list[str], categorical: list[str], present: set[str], *, id_column: str | None = None,
                output: str = "probability") -> str:
    """Flattened rows: numeric features cast to DOUBLE (``<f>__invalid`` flags text that is no number),
    categorical features and the id as text, the model's output as ``__output`` (JSON text)."""
    parts = []
    texts = [*categorical, *([id_column] if id_column else [])]
    for name in [*numeric, *texts]:
        if name in present:
            parts.append(f"unnest(json_extract_string(line, '$.inputs.{_key(name)}[*]')) AS {_col(name)}")
    parts.append(f"unnest(json_extract(line, '$.outputs.{_key(output)}[*]')) AS \"__output\"")
    inner = ",\n       ".join(parts)
    outer = []
    for name in numeric:
        if name in present:
            outer += [f"TRY_CAST({_col(name)} AS DOUBLE) AS {_col(name)}",
                      f"({_col(name)} IS NOT NULL AND TRY_CAST({_col(name)} AS DOUBLE) IS NULL) AS {_col(name + '__invalid')}"]
    outer += [_col(name) for name in texts if name in present]
    outer.append("CAST(\"__output\" AS VARCHAR) AS \"__output\"")
    return f"SELECT {', '.join(outer)}\nFROM (SELECT {inner}\nFROM capture_lines WHERE ok)"


def duckdb_rows_streamed(glob: str, numeric: list[str], categorical: list[str], *, output: str = "probability") -> str:
    """The rows of :func:`duckdb_rows` read for volume: DuckDB's JSON reader with the capture line's types
    given (numbers DOUBLE[], the rest VARCHAR[]), one pass, nothing materialised. A record whose values do not
    fit those types is skipped (``ignore_errors``), not counted: :func:`duckdb_summary` counts them."""
    for name in [*numeric, *categorical, output]:
        _key(name)
    fields = ", ".join([f'"{n}" DOUBLE[]' for n in numeric] + [f'"{n}" VARCHAR[]' for n in categorical])
    columns = (f"{{'inputs': 'STRUCT({fields})', 'outputs': 'STRUCT(\"{output}\" JSON[])'}}")
    picks = [f'unnest(inputs.{_col(n)}) AS {_col(n)}' for n in [*numeric, *categorical]]
    picks.append(f'CAST(unnest(outputs.{_col(output)}) AS VARCHAR) AS "__output"')
    return (f"SELECT {', '.join(picks)}\nFROM read_json({literal(glob)}, format = 'newline_delimited', "
            f"columns = {columns}, ignore_errors = true)")


# --------------------------------------------------------------------------------------------- Athena

#: A capture line Athena can flatten: JSON whose ``inputs`` is an object (the DuckDB path's ``ok``).
_ATHENA_VALID = "(TRY(CAST(json_extract(line, '$.inputs') AS MAP(VARCHAR, JSON))) IS NOT NULL)"


def athena_capture_table_ddl(database: str, table: str, location: str) -> str:
    """An external table of raw capture lines over ``capture/<model>/`` with hour partition projection."""
    return f"""
CREATE EXTERNAL TABLE IF NOT EXISTS {identifier(database)}.{identifier(table)} (line string)
PARTITIONED BY (hour string)
ROW FORMAT DELIMITED LINES TERMINATED BY '\\n'
LOCATION {literal(location.rstrip('/') + '/')}
TBLPROPERTIES (
  'projection.enabled'='true',
  'projection.hour.type'='date',
  'projection.hour.format'='yyyy/MM/dd/HH',
  'projection.hour.range'='2020/01/01/00,NOW',
  'projection.hour.interval'='1',
  'projection.hour.interval.unit'='HOURS',
  'storage.location.template'={literal(location.rstrip('/') + '/${hour}/')}
)"""


def athena_rows(database: str, table: str, hour: str, numeric: list[str], categorical: list[str], *,
                id_column: str | None = None, output: str = "probability") -> str:
    """Trino SQL with the same meaning as :func:`duckdb_rows` (UNNEST ... WITH ORDINALITY, zipped)."""
    texts = [*categorical, *([id_column] if id_column else [])]
    names = [*numeric, *texts]
    arrays = ", ".join(
        f"COALESCE(TRY_CAST(json_extract(line, {literal(f'$.inputs[{_key(n)}]')}) AS ARRAY(JSON)), ARRAY[]) "
        for n in names
    )
    arrays += f", COALESCE(TRY_CAST(json_extract(line, {literal(f'$.outputs[{_key(output)}]')}) AS ARRAY(JSON)), ARRAY[])"
    cols = ", ".join(_col(f"{n}_j") for n in names) + ", \"__output_j\""
    select = []
    for n in numeric:
        j = _col(f"{n}_j")
        select += [f"TRY_CAST(json_format({j}) AS DOUBLE) AS {_col(n)}",
                   f"({j} IS NOT NULL AND json_format({j}) <> 'null' AND "
                   f"TRY_CAST(json_format({j}) AS DOUBLE) IS NULL) AS {_col(n + '__invalid')}"]
    select += [f"json_extract_scalar({_col(n + '_j')}, '$') AS {_col(n)}" for n in texts]
    select.append("json_format(\"__output_j\") AS \"__output\"")
    return (
        f"SELECT {', '.join(select)}\nFROM {identifier(database)}.{identifier(table)}\n"
        f"CROSS JOIN UNNEST({arrays}) AS t({cols})\n"
        f"WHERE hour = {literal(hour)} AND {_ATHENA_VALID}"
    )


def athena_summary(database: str, table: str, hour: str, features: list[str] = ()) -> str:
    """``files, lines, malformed`` of the hour, and ``present_<i>``: how many valid records carry
    ``features[i]`` (what :func:`duckdb_keys` tells the DuckDB path). A line is malformed as in
    :func:`duckdb_lines`: not JSON, or its ``inputs`` is not an object."""
    present = "".join(
        f", count_if({_ATHENA_VALID} AND json_extract(line, {literal(f'$.inputs[{_key(n)}]')}) IS NOT NULL) "
        f"AS present_{i}"
        for i, n in enumerate(features)
    )
    return (
        f"SELECT count(DISTINCT \"$path\") AS files, count(*) AS lines, "
        f"count_if(NOT {_ATHENA_VALID}) AS malformed{present}\n"
        f"FROM {identifier(database)}.{identifier(table)} WHERE hour = {literal(hour)} AND trim(line) <> ''"
    )
