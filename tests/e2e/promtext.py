"""A strict parser of the Prometheus text exposition format 0.0.4, for the admin tests.

Stricter than Prometheus itself where it costs nothing: every family has HELP and TYPE lines
before its samples, a family's samples are contiguous, no series appears twice, names and
labels are well formed, label values use only the three escapes the format defines,
histograms have cumulative buckets ending at le="+Inf", whose value equals _count, and a _sum.
Raises ValueError naming the line on anything else.
"""

from __future__ import annotations

import math
import re

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def _value(text: str, where: str) -> float:
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text):
        raise ValueError(f"{where}: bad value {text!r}")
    return float(text)


def _labels(text: str, where: str) -> tuple:
    """Parses `a="x",b="y"` (the part between braces) into a sorted tuple of pairs."""
    out, i = {}, 0
    while i < len(text):
        m = LABEL_NAME.match(text, i)
        if not m or text[m.end():m.end() + 2] != '="':
            raise ValueError(f"{where}: bad label at {text[i:]!r}")
        name, i, value = m.group(0), m.end() + 2, []
        while True:
            if i >= len(text):
                raise ValueError(f"{where}: unterminated label value")
            c = text[i]
            if c == "\\":
                nxt = text[i + 1:i + 2]
                if nxt not in ("\\", '"', "n"):
                    raise ValueError(f"{where}: bad escape \\{nxt}")
                value.append("\n" if nxt == "n" else nxt)
                i += 2
            elif c == '"':
                i += 1
                break
            elif c == "\n":
                raise ValueError(f"{where}: newline in a label value")
            else:
                value.append(c)
                i += 1
        if name in out:
            raise ValueError(f"{where}: label {name} twice")
        out[name] = "".join(value)
        if i < len(text):
            if text[i] != ",":
                raise ValueError(f"{where}: expected ',' at {text[i:]!r}")
            i += 1
    return tuple(sorted(out.items()))


def parse(text: str) -> dict:
    """{(name, labels): value} of every sample; labels a sorted tuple of (name, value)."""
    if text and not text.endswith("\n"):
        raise ValueError("the exposition does not end with a newline")
    samples: dict = {}
    types: dict = {}
    helps: set = set()
    done: set = set()  # families whose samples are over
    current = None
    for number, line in enumerate(text.split("\n")[:-1], 1):
        where = f"line {number}"
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not NAME.fullmatch(name):
                    raise ValueError(f"{where}: bad metric name {name!r}")
                if parts[1] == "HELP":
                    if name in helps:
                        raise ValueError(f"{where}: second HELP for {name}")
                    helps.add(name)
                else:
                    if name in types or len(parts) != 4 or parts[3] not in TYPES:
                        raise ValueError(f"{where}: bad or second TYPE line")
                    types[name] = parts[3]
                if current is not None and current != name:
                    done.add(current)
                current = name
            continue
        if not line:
            raise ValueError(f"{where}: empty line")
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)", line)
        if not m:
            raise ValueError(f"{where}: not a sample: {line!r}")
        name, labels, value = m.group(1), _labels(m.group(3) or "", where), _value(m.group(4), where)
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[:-len(suffix)]
            if name.endswith(suffix) and types.get(base) == "histogram":
                family = base
        if family not in types or family not in helps:
            raise ValueError(f"{where}: {name} has no TYPE and HELP before it")
        if family != current or family in done:
            raise ValueError(f"{where}: samples of {family} are not contiguous")
        if (name, labels) in samples:
            raise ValueError(f"{where}: {name}{dict(labels)} twice")
        if types[family] in ("counter", "histogram") and not (value >= 0):
            raise ValueError(f"{where}: a counter below zero")
        samples[(name, labels)] = value
    _check_histograms(samples, types)
    return samples


def _check_histograms(samples: dict, types: dict) -> None:
    for family, kind in types.items():
        if kind != "histogram":
            continue
        series: dict = {}
        for (name, labels), value in samples.items():
            if name == family + "_bucket":
                rest = tuple(p for p in labels if p[0] != "le")
                le = dict(labels).get("le")
                if le is None:
                    raise ValueError(f"{family}: a bucket without le")
                series.setdefault(rest, []).append((_value(le, family), value))
        for rest, buckets in series.items():
            buckets.sort()
            if not math.isinf(buckets[-1][0]):
                raise ValueError(f"{family}{dict(rest)}: no le=\"+Inf\" bucket")
            for (_, a), (_, b) in zip(buckets, buckets[1:]):
                if b < a:
                    raise ValueError(f"{family}{dict(rest)}: buckets are not cumulative")
            count = samples.get((family + "_count", rest))
            if count != buckets[-1][1] or (family + "_sum", rest) not in samples:
                raise ValueError(f"{family}{dict(rest)}: _count differs from the +Inf bucket, or no _sum")


def value(samples: dict, name: str, **labels) -> float:
    """The one sample called `name` whose labels include `labels`; raises KeyError unless
    exactly one matches."""
    found = [v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items()]
    if len(found) != 1:
        raise KeyError(f"{len(found)} samples match {name}{labels}")
    return found[0]


def total(samples: dict, name: str, **labels) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items())
