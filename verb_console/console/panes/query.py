"""The filter line's language; it lives in :mod:`verb_console.filtering`, shared with the server."""

from verb_console.filtering import BadFilter, Term, apply, matcher, parse
from verb_console.units import to_number

__all__ = ["BadFilter", "Term", "apply", "matcher", "parse", "to_number"]
