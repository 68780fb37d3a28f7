"""Licence strings -> licence classes, and the licence filter.

A licence text (a column, a sidecar field, an embedded tag, a URL, an SPDX expression, Debian's
copyright notation) is parsed into *options*: the licensee may pick any option, and an option holds every
class that applies together ("A AND B"). `CC-BY(-SA)-3.0/PD` reads as three options: CC-BY, CC-BY-SA, PD.
An item passes the filter when one option has all its classes in the allowed set.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Sec. 5: "all under CC-0, CC-BY, or CC-Sampling+"
ALLOWED_LICENSES = ("CC0", "CC-BY", "CC-Sampling+")
CC_CLASSES = tuple("CC-BY" + nc + nd + sa for nc in ("", "-NC") for nd in ("", "-ND") for sa in ("", "-SA")
                   if not (nd and sa))
LICENSE_CLASSES = ("CC0", "PD", "CC-Sampling+", "CC-Sampling", "CC-NC-Sampling+", *CC_CLASSES, "OGA-BY", "GPL", "LGPL", "AGPL",
                   "MIT", "BSD", "Apache", "MPL", "Artistic", "OFL", "WTFPL", "Unlicense", "ISC", "Zlib", "FAL")
ANY = "any"  # --licenses any: every recognised class (unknown licences still fail)

# (pattern on the lower-cased text, class); first match wins. Whole-word matches, so "mit" is no part of "submit".
_NAMED = (
    (r"\boga-by|opengameart.*by", "OGA-BY"),
    (r"\bagpl|affero", "AGPL"),
    (r"\blgpl|lesser general public|library general public", "LGPL"),
    (r"\bgpl|gnu general public|general public licen[cs]e", "GPL"),
    (r"\bmit\b|expat", "MIT"),
    (r"\bbsd\b|\bbsd-|0bsd", "BSD"),
    (r"\bapache", "Apache"),
    (r"\bmpl\b|mpl-|mozilla public", "MPL"),
    (r"\bartistic", "Artistic"),
    (r"\bofl\b|ofl-|open font licen", "OFL"),
    (r"\bwtfpl", "WTFPL"),
    (r"\bunlicense\b", "Unlicense"),
    (r"\bisc\b", "ISC"),
    (r"\bzlib\b", "Zlib"),
    (r"free art licen|\bfal\b|artlibre", "FAL"),
)


def _one_class(text: str) -> str | None:
    """One licence (no alternatives) -> its class, or None if not recognised."""
    t = text.strip().lower().replace("_", " ")
    if not t:
        return None
    if "sampling+" in t or "sampling plus" in t or "sampling-plus" in t:
        return "CC-NC-Sampling+" if "nc-sampling" in t or "noncommercial" in t else "CC-Sampling+"
    if re.search(r"\bcc0|\bcc-0|zero|commons 0|publicdomain/zero", t):
        return "CC0"
    if re.search(r"public ?domain|publicdomain/mark|^pd$|^pd[ -]|\bpdm\b", t):
        return "PD"
    nc = bool(re.search(r"noncommercial|non-commercial|non commercial|\bnc\b|-nc\b|by-nc", t))
    nd = bool(re.search(r"noderiv|no deriv|no-deriv|\bnd\b|-nd\b", t))
    sa = bool(re.search(r"sharealike|share alike|share-alike|\bsa\b|-sa\b", t))
    is_cc = re.search(r"creativecommons|creative commons|\bcc[ -]?by|\bcc\b", t) is not None
    by = re.search(r"(^|[/ -])by([/ -]|$)|\bby-", t) and (is_cc or re.match(r"by\b", t))
    if "attribution" in t or by:
        return "CC-BY" + ("-NC" if nc else "") + ("-ND" if nd else "") + ("-SA" if sa and not nd else "")
    if "sampling" in t:
        return "CC-Sampling"
    for pattern, name in _NAMED:
        if re.search(pattern, t):
            return name
    return None


def _expand_optional(text: str) -> list[str]:
    """Debian's `CC-BY(-SA)-3.0`: the parenthesised part is optional -> ["CC-BY-3.0", "CC-BY-SA-3.0"]."""
    m = re.search(r"\((-?[A-Za-z]{2,3})\)", text)
    if not m:
        return [text]
    rest = text[: m.start()], text[m.end():]
    return _expand_optional(rest[0] + rest[1]) + _expand_optional(rest[0] + m.group(1) + rest[1])


def license_options(text: str | None) -> list[frozenset[str | None]]:
    """Alternatives (OR, `/`, `|`, `;`) of conjunctions (AND, `&`) of classes; a class is None where a part
    is not recognised."""
    if text is None or not str(text).strip():
        return []
    t = str(text).strip()
    urls = re.findall(r"\w+://[^\s()<>]+", t)
    for i, url in enumerate(urls):  # a URL is one licence: its slashes separate nothing
        t = t.replace(url, f"\0{i}\0", 1)

    def cls(part: str) -> str | None:
        m = re.fullmatch(r"\0(\d+)\0", part)
        return _one_class(urls[int(m.group(1))] if m else re.sub(r"\0(\d+)\0", lambda g: urls[int(g.group(1))], part))

    options = []
    for alt in re.split(r"\s+or\s+|\s*[|;]\s*|/", t, flags=re.IGNORECASE):
        alt = alt.strip(" ()")
        if not alt:
            continue
        for variant in _expand_optional(alt):
            parts = re.split(r"\s+and\s+|\s*&\s*", variant, flags=re.IGNORECASE)
            options.append(frozenset(cls(p.strip(" ()")) for p in parts if p.strip(" ()")))
    if len(options) > 1 and any(None in o for o in options):  # "Attribution/NonCommercial" is one licence
        whole = _one_class(str(text))
        if whole:
            return [frozenset({whole})]
    return options


def license_class(text: str | None) -> str | None:
    """The class of a licence text, or for alternatives the classes joined by " or "; None if unknown."""
    names = []
    for option in license_options(text):
        if None in option:
            continue
        name = " and ".join(sorted(option))
        if name not in names:
            names.append(name)
    return " or ".join(names) if names else None


def check_license_names(names: Iterable[str]) -> tuple[str, ...]:
    """Validate `--licenses` names (case-insensitive; `any` = every recognised class)."""
    by_lower = {c.lower(): c for c in LICENSE_CLASSES}
    out = []
    for name in names:
        if name.lower() == ANY:
            return LICENSE_CLASSES
        if name.lower() not in by_lower:
            raise ValueError(f"unknown licence class {name!r}; known: {', '.join(LICENSE_CLASSES)} (or 'any')")
        out.append(by_lower[name.lower()])
    return tuple(out)


def allowed_class(text: str | None, allowed: Iterable[str]) -> str | None:
    """The first option of `text` whose classes are all allowed, named as in license_class; else None."""
    allowed = set(allowed)
    for option in license_options(text):
        if None not in option and option <= allowed:
            return " and ".join(sorted(option))
    return None
