"""Whether an email address's domain may be given to a new account.

The domain must be a valid IDNA 2008 name (after UTS #46 mapping, with the STD3 rules
that allow only letters, digits and inner hyphens in ASCII labels), written as either
its A-labels (`xn--…`) or its U-labels, and no label may mix scripts the way a spoof
does (`paypal` with its first `a` Cyrillic).

The script rule is Unicode's "highly restrictive" level (UTS #39 §5.2): a label's
letters all share one script, once characters common to scripts (digits, the hyphen)
and inherited marks are set aside; besides that, Latin may be mixed only with the
scripts that Japanese, Chinese and Korean are written in together (Han with Hiragana
and Katakana, with Bopomofo, or with Hangul). A character's scripts are its Unicode
Script_Extensions, as fontTools' Unicode tables give them.
"""

from __future__ import annotations

from functools import reduce

import idna
from fontTools import unicodedata

_ANY_SCRIPT = frozenset({"Zyyy", "Zinh"})  # Common, Inherited
_LATIN = "Latn"
# Scripts that are written together, each standing for its combination (UTS #39 §5.1).
_WRITTEN_WITH = {
    "Hani": frozenset({"Hanb", "Jpan", "Kore"}),
    "Hira": frozenset({"Jpan"}),
    "Kana": frozenset({"Jpan"}),
    "Bopo": frozenset({"Hanb"}),
    "Hang": frozenset({"Kore"}),
}
_COMBINATIONS = frozenset({"Hanb", "Jpan", "Kore"})


def domain_problem(domain: str) -> str | None:
    """Why `domain` may not be an account's email domain, or None when it may."""
    try:
        ascii_form = idna.encode(domain, uts46=True, std3_rules=True).decode("ascii")
        unicode_form = idna.decode(ascii_form)
    except (idna.IDNAError, UnicodeError):
        return "the domain is not a valid (internationalised) domain name"
    if domain not in (ascii_form, unicode_form):
        forms = dict.fromkeys((unicode_form, ascii_form))
        return f"write the domain as {' or '.join(forms)}"
    if any(_mixes_scripts(label) for label in unicode_form.split(".")):
        return "a label of the domain mixes scripts"
    return None


def _scripts(character: str) -> frozenset[str] | None:
    """The scripts `character` is written in, with their combinations; None for any."""
    scripts = frozenset(unicodedata.script_extension(character))
    if scripts & _ANY_SCRIPT:
        return None
    return scripts.union(*(_WRITTEN_WITH.get(script, frozenset()) for script in scripts))


def _mixes_scripts(label: str) -> bool:
    sets = [scripts for scripts in map(_scripts, label) if scripts is not None]
    if not sets or reduce(frozenset.intersection, sets):
        return False
    non_latin = [scripts for scripts in sets if _LATIN not in scripts]
    return not (non_latin and reduce(frozenset.intersection, non_latin) & _COMBINATIONS)
