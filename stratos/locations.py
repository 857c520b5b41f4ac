"""Where a catalog row's server is: region strings resolved in layers, each recorded with the row.

Real catalogs name regions in many shapes: cloud region ids (us-east-1, europe-central-1,
us-central1-b), city-country slugs (lisbon-portugal-2), "City/State, CC, Continent" triples
(Ohio, US, NA), "CC - code" pairs (SE - STO-03), airport or data-centre codes (nyc1, GRA11, FRA),
bare countries (CANADA, UTAH_USA) and placeholders (UNSPECIFIED, default, an empty cell). A string
is resolved by the first layer that knows it:

  exact     the whole string is in regions.csv (a cloud-qualified 'cloud/name' entry first), or it
            is a literal 'lat,lon';
  parsed    the parser found a specific place in it (places.csv): a city or its airport code, a
            state, or a region-id stem such as us-east or ap-southeast;
  centroid  it names only a country (countries.csv) or a continent: that country's (continent's) hub;
  assumed   nothing: the location is unknown. The row is kept; the latency objective gives it the
            worst case (catalog.assumed_latency_ms) and the report counts it.

The parser reads whole words only (digits are dropped from the end of a word, so 'fra2' is 'fra'
and 'central1' is 'central'; a word that mixes letters and digits otherwise, like a UUID chunk, is
ignored), joins up to three neighbouring words ('kansas city', 'st petersburg'), and prefers a city
to a state to a region-id stem. A place that contradicts the string's country is ignored. Resolution
is a pure function of the string and the cloud, so the same string always lands in the same place.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from functools import cache

import pandas as pd

from stratos.data import DATA_DIR

LAYERS = ("exact", "parsed", "centroid", "assumed")
# Strings that say "somewhere" rather than naming a place.
PLACEHOLDERS = frozenset(
    {"", "-", "unspecified", "default", "unknown", "none", "null", "n/a", "any", "anywhere", "global", "auto"}
)
CONTINENT_CODES = frozenset({"eu", "na", "sa", "as", "af", "oc"})  # the third part of a vast-style triple
SPECIFIC_KINDS = ("city", "subdivision", "direction")  # most specific first


@dataclass(frozen=True)
class Location:
    lat: float
    lon: float
    source: str  # one of LAYERS
    place: str  # what was recognised, for the report: 'Frankfurt, DE', 'Canada', 'us-east-1'


ASSUMED = Location(math.nan, math.nan, "assumed", "")


@dataclass(frozen=True)
class _Place:
    name: str
    kind: str
    country: str
    lat: float
    lon: float


@dataclass(frozen=True)
class _Country:
    code: str
    name: str
    continent: str
    lat: float
    lon: float


def _read(name: str) -> pd.DataFrame:
    return pd.read_csv(DATA_DIR / name, comment="#", skipinitialspace=True, keep_default_na=False)


def _fold(text: str) -> str:
    """Lower case without accents: 'São Paulo' and 'Sao Paulo' meet."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", _fold(text))


@cache
def exact_regions() -> dict[str, tuple[float, float]]:
    """regions.csv by lower-case name ('cloud/name' entries included)."""
    return {row.name.lower(): (float(row.lat), float(row.lon)) for row in _read("regions.csv").itertuples()}


def region_aliases() -> list[str]:
    """The user-facing aliases in regions.csv (us-east, eu-west, ...), for error messages."""
    return sorted(row.name for row in _read("regions.csv").itertuples() if row.kind == "alias")


@cache
def _places() -> dict[str, _Place]:
    places: dict[str, _Place] = {}
    for row in _read("places.csv").itertuples():
        place = _Place(row.name, row.kind, row.country, float(row.lat), float(row.lon))
        for alias in [row.name, *filter(None, row.aliases.split("|"))]:
            places[_key(alias)] = place
    return places


@cache
def _countries() -> dict[str, _Country]:
    countries: dict[str, _Country] = {}
    for row in _read("countries.csv").itertuples():
        country = _Country(row.code, row.name, row.continent, float(row.lat), float(row.lon))
        for alias in [row.code, row.name, *filter(None, row.aliases.split("|"))]:
            countries[_key(alias)] = country
    return countries


def _words(text: str) -> list[str]:
    """Whole alphabetic words, each stripped of a trailing number ('GRA11' -> 'gra')."""
    words = []
    for chunk in re.split(r"[^a-z0-9]+", _fold(text)):
        match = re.fullmatch(r"([a-z]+)\d*", chunk)
        if match:
            words.append(match[1])
    return words


def _ngrams(words: list[str]):
    """(start, length, joined key) for runs of up to three words, longest first; one-letter words skipped."""
    for n in (3, 2, 1):
        for i in range(len(words) - n + 1):
            key = "".join(words[i : i + n])
            if len(key) > 1:
                yield i, n, key


def _specific_place(words: list[str], country: _Country | None) -> _Place | None:
    """The most specific place the words name that does not contradict `country`."""
    found = []
    for i, n, key in _ngrams(words):
        place = _places().get(key)
        if place is None or place.kind not in SPECIFIC_KINDS:
            continue
        if country is not None and place.country not in ("", country.code):
            continue
        found.append((SPECIFIC_KINDS.index(place.kind), -n, i, place))
    return min(found, key=lambda f: f[:3])[3] if found else None


def _first_country(words: list[str]) -> _Country | None:
    found = [(i, -n, c) for i, n, key in _ngrams(words) if (c := _countries().get(key))]
    return min(found, key=lambda f: f[:2])[2] if found else None


def _first_continent(words: list[str]) -> _Place | None:
    found = [
        (i, -n, p) for i, n, key in _ngrams(words) if (p := _places().get(key)) and p.kind == "continent"
    ]
    return min(found, key=lambda f: f[:2])[2] if found else None


def _from_words(words: list[str], country: _Country | None, continent: _Place | None = None) -> Location:
    """Parsed place, else the country's hub, else the continent's, else assumed."""
    place = _specific_place(words, country)
    if place is not None:
        label = f"{place.name}, {place.country}" if place.country else place.name
        return Location(place.lat, place.lon, "parsed", label)
    if country is not None:
        return Location(country.lat, country.lon, "centroid", country.name)
    continent = continent or _first_continent(words)
    if continent is not None:
        return Location(continent.lat, continent.lon, "centroid", continent.name)
    return ASSUMED


def _lat_lon(text: str) -> tuple[float, float] | None:
    match = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*", text)
    if match:
        lat, lon = float(match[1]), float(match[2])
        if -90 <= lat <= 90 and -180 <= lon <= 180:
            return lat, lon
    return None


def _exact(text: str, cloud: str) -> Location | None:
    name = text.strip().lower()
    for key in (f"{cloud.lower()}/{name}", name) if cloud else (name,):
        if key in exact_regions():
            return Location(*exact_regions()[key], "exact", text.strip())
    coords = _lat_lon(text)
    return Location(*coords, "exact", text.strip()) if coords else None


def resolve_location(text: str, cloud: str = "") -> Location:
    """Resolve one region string (see the module docstring for the layers)."""
    text = str(text)
    if text.strip().lower() in PLACEHOLDERS:
        return ASSUMED
    exact = _exact(text, cloud)
    if exact is not None:
        return exact
    parts = [p.strip() for p in text.split(",")]
    # "City/State, CC, Continent" (vast): the middle part is the country, the last a continent code.
    if len(parts) == 3 and parts[2].lower() in CONTINENT_CODES:
        words = _words(parts[0])
        code = _countries().get(_key(parts[1])) if len(parts[1]) == 2 else None
        country = code or _first_country(words)
        return _from_words(words, country, _places().get(_key(parts[2])))
    # "CC - rest" (primeintellect): the code is the country; the rest may itself be an exact region.
    pair = re.fullmatch(r"([A-Za-z]{2})\s+-\s+(.*)", text.strip())
    if pair and (country := _countries().get(pair[1].lower())):
        rest = _exact(pair[2], cloud)
        if rest is not None:
            return Location(rest.lat, rest.lon, "parsed", rest.place)
        return _from_words(_words(pair[2]), country)
    words = _words(text)
    return _from_words(words, _first_country(words))


def resolve_row(zone: str, region: str, cloud: str = "") -> Location:
    """The better-resolved of a row's zone and region (the zone, more precise, wins a tie)."""
    zone_loc = resolve_location(zone, cloud) if zone else ASSUMED
    region_loc = resolve_location(region, cloud)
    return min((zone_loc, region_loc), key=lambda loc: LAYERS.index(loc.source))


def user_region(name: str) -> tuple[float, float] | None:
    """(lat, lon) of a user's region: an exact entry, 'lat,lon' or a parsed place; None otherwise.

    A bare country is not accepted for a user: a typo such as 'us-esat' would otherwise land on the
    middle of the US without a word.
    """
    location = resolve_location(name)
    return (location.lat, location.lon) if location.source in ("exact", "parsed") else None
