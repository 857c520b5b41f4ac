"""Region strings in the shapes real catalogs use, resolved in layers; properties over random strings."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stratos.locations import LAYERS, resolve_location, resolve_row

# (region string as a catalog writes it, layer, what it must be read as) -- all from real SkyPilot catalogs.
SHAPES = [
    ("us-east-1", "exact", "us-east-1"),
    ("europe-central-1", "exact", "europe-central-1"),
    ("eastus2", "exact", "eastus2"),  # Azure: one word, only the table knows it
    ("us-central1-b", "parsed", "us-central, US"),  # a region-id stem
    ("us-southcentral1-a", "parsed", "us-southcentral, US"),
    ("lisbon-portugal-2", "parsed", "Lisbon, PT"),  # city-country slug
    ("kansascity-usa-4", "parsed", "Kansas City, US"),
    ("Ohio, US, NA", "parsed", "Ohio, US"),  # State, CC, Continent
    ("St.-Petersburg, RU, EU", "parsed", "Saint Petersburg, RU"),
    ("Hong Kong, HK, AS", "parsed", "Hong Kong, HK"),
    ("SE - STO-03", "parsed", "Stockholm, SE"),  # CC - data-centre code
    ("US - us-midwest-1", "parsed", "us-midwest-1"),  # CC - an exact region
    ("CA - MON1", "parsed", "Montreal, CA"),
    ("nyc1", "parsed", "New York, US"),  # airport-style codes
    ("GRA11", "parsed", "Gravelines, FR"),
    ("East Coast (NY2)", "parsed", "New York, US"),
    ("NORTH_DAKOTA_USA", "parsed", "North Dakota, US"),
    ("Washington, US, NA", "parsed", "Washington, US"),  # the state, since the country says US
    ("Czechia, CZ, EU", "centroid", "Czechia"),  # only a country
    (", US, NA", "centroid", "United States"),
    ("FINLAND", "centroid", "Finland"),  # fluidstack
    ("Europe-NO", "centroid", "Norway"),
    ("North America-CA", "centroid", "Canada"),
    ("FI - FIN-01", "centroid", "Finland"),
    ("US - a3111bd4-550a-47d0-838a-0a52bff2ae3f", "centroid", "United States"),  # UUID words ignored
    ("Atlantis, XX, EU", "centroid", "Europe"),  # an unknown country: the continent
    ("UNSPECIFIED", "assumed", ""),
    ("default", "assumed", ""),
    ("", "assumed", ""),
    ("zz-qqq-9", "assumed", ""),
]


@pytest.mark.parametrize("text,layer,place", SHAPES)
def test_each_shape_resolves_to_its_layer_and_place(text, layer, place):
    loc = resolve_location(text)
    assert (loc.source, loc.place) == (layer, place)
    assert math.isnan(loc.lat) if layer == "assumed" else (-90 <= loc.lat <= 90 and -180 <= loc.lon <= 180)


def test_places_are_where_they_should_be():
    def coords(text: str, cloud: str = "") -> tuple[float, float]:
        loc = resolve_location(text, cloud)
        return loc.lat, loc.lon

    assert coords("frankfurt-germany-6") == pytest.approx((50.11, 8.68))
    # A cloud-qualified entry wins for its own cloud: Lambda's us-west-2 is Phoenix, AWS's is Oregon.
    assert coords("us-west-2", cloud="lambda") == pytest.approx((33.45, -112.07))
    assert coords("us-west-2", cloud="aws") == pytest.approx((45.84, -119.70))
    # A place that contradicts the string's country is not used: Georgia the state is in the US.
    assert resolve_location("Georgia, GE, AS").place == "Georgia"


def test_a_row_takes_the_better_of_zone_and_region():
    assert resolve_row("DE1", "FRA").place == "Frankfurt, DE"  # zone names only a country, region a city
    assert resolve_row("US-CA-1", "US").source == "exact"
    assert resolve_row("", "UNSPECIFIED").source == "assumed"


# Random strings built from the shapes above, with real and made-up parts.
words = st.sampled_from(
    [
        "us",
        "east",
        "central",
        "paris",
        "france",
        "Kansas City",
        "Ohio",
        "lisbon",
        "FRA",
        "sto",
        "gra",
        "xyz",
        "qq",
    ]
)
codes = st.sampled_from(["US", "SE", "DE", "FR", "CA", "XX", "na", "eu", "Zz"])
continents = st.sampled_from(["NA", "EU", "AS", "SA", "AF", "OC"])
numbers = st.integers(0, 99).map(str)
region_strings = st.one_of(
    st.tuples(words, words, numbers).map("-".join),  # us-east-1, lisbon-portugal-2
    st.tuples(words, codes, continents).map(", ".join),  # Ohio, US, NA
    st.tuples(codes, words, numbers).map(lambda t: f"{t[0]} - {t[1]}-{t[2]}"),  # SE - STO-03
    st.tuples(words, numbers).map("".join),  # nyc1, GRA11
    st.sampled_from(["UNSPECIFIED", "default", "", " ", "n/a"]),
    st.text(max_size=30),  # anything at all
)


@settings(max_examples=400, deadline=None)
@given(region_strings)
def test_random_region_strings_never_crash_and_resolve_stably(text):
    first = resolve_location(text)
    assert first.source in LAYERS
    assert resolve_location(text) == first  # stable: a pure function of the string
    assert resolve_location(f"  {text}  ") == first  # padding changes nothing
    if first.source == "assumed":
        assert math.isnan(first.lat) and math.isnan(first.lon)
    else:
        assert -90 <= first.lat <= 90 and -180 <= first.lon <= 180
