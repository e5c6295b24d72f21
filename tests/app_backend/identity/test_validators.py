"""Identifier checks (GB 11643 ID numbers, GB 32100 credit codes, phones, names), masking, encryption."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from cryptography.exceptions import InvalidTag
from hypothesis import assume, given
from hypothesis import strategies as st

from app_backend.identity.validators import (
    PROVINCE_CODES,
    USCC_ALPHABET,
    InvalidIdentifier,
    id_number_check_char,
    normalise_name,
    normalise_phone,
    normalise_uscc,
    uscc_check_char,
    uscc_checksum_ok,
    validate_id_number,
    validate_uscc,
)
from app_backend.kernel.crypto import FieldCipher, mask

TODAY = dt.date(2025, 6, 15)
GB11643_EXAMPLE = "11010519491231002X"  # the example printed in GB 11643-1999
GB32100_EXAMPLE = "91350100M000100Y43"  # the example printed in GB 32100-2015
NO_STARS = st.characters(blacklist_characters="*")  # a value of stars masks to itself, harmlessly


# --- strategies ---------------------------------------------------------------------------------------------


@st.composite
def id_numbers(draw: st.DrawFn) -> str:
    """A valid resident ID number: region + existing birth date (1900..TODAY) + sequence + computed check."""
    region = draw(st.sampled_from(sorted(PROVINCE_CODES))) + draw(st.from_regex(r"[0-9]{4}", fullmatch=True))
    born = draw(st.dates(min_value=dt.date(1900, 1, 1), max_value=TODAY))
    sequence = draw(st.integers(0, 999))
    first17 = f"{region}{born:%Y%m%d}{sequence:03d}"
    return first17 + id_number_check_char(first17)


@st.composite
def usccs(draw: st.DrawFn) -> str:
    first17 = "".join(draw(st.lists(st.sampled_from(USCC_ALPHABET), min_size=17, max_size=17)))
    return first17 + uscc_check_char(first17)


def _with_id(first17: str) -> str:
    """first17 plus its correct check character: only the fault under test is wrong."""
    return first17 + id_number_check_char(first17)


# --- GB 11643: resident ID numbers --------------------------------------------------------------------------


def test_the_standards_example_is_valid():
    assert validate_id_number(GB11643_EXAMPLE) == GB11643_EXAMPLE
    assert id_number_check_char(GB11643_EXAMPLE[:17]) == "X"


def test_lowercase_x_and_surrounding_spaces_are_accepted_and_normalised():
    assert validate_id_number("11010519491231002x") == GB11643_EXAMPLE
    assert validate_id_number("  11010519491231002x \n") == GB11643_EXAMPLE


@given(id_numbers())
def test_generated_valid_numbers_pass(number):
    assert validate_id_number(number, today=TODAY) == number


@given(id_numbers(), st.integers(0, 17), st.sampled_from("0123456789X"))
def test_any_single_character_change_fails(number, position, replacement):
    assume(number[position] != replacement)
    changed = number[:position] + replacement + number[position + 1 :]
    with pytest.raises(InvalidIdentifier):
        validate_id_number(changed, today=TODAY)


@given(id_numbers(), st.integers(0, 16))
def test_swapping_two_different_neighbouring_digits_fails(number, position):
    """The ISO 7064 MOD 11-2 check also catches the commonest typing slip, a transposition."""
    a, b = number[position], number[position + 1]
    assume(a != b and b != "X")
    swapped = number[:position] + b + a + number[position + 2 :]
    with pytest.raises(InvalidIdentifier):
        validate_id_number(swapped, today=TODAY)


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (GB11643_EXAMPLE[:17] + "1", "check character"),
        ("", "18 characters"),
        (GB11643_EXAMPLE[:17], "18 characters"),
        (GB11643_EXAMPLE + "0", "18 characters"),
        ("1101051949123100XX", "17 digits"),
        ("11010519491231A02X", "17 digits"),
        (_with_id("99010519491231002"), "region"),
        (_with_id("00010519491231002"), "region"),
        (_with_id("32120219900230001"), "birth date does not exist"),  # 30 February
        (_with_id("32120219901301001"), "birth date does not exist"),  # month 13
        (_with_id("32120219000229001"), "birth date does not exist"),  # 1900 was not a leap year
        (_with_id("32120218991231001"), "before 1900"),
        (_with_id("32120220250616001"), "future"),  # the day after TODAY
    ],
)
def test_invalid_numbers_say_what_is_wrong(raw, says):
    with pytest.raises(InvalidIdentifier, match=says):
        validate_id_number(raw, today=TODAY)


def test_born_today_and_29_february_of_a_leap_year_are_fine():
    assert validate_id_number(_with_id("32120220250615001"), today=TODAY)
    assert validate_id_number(_with_id("32120220000229001"), today=TODAY)


_UNICODE_DIGITS = {  # the same ten digits in other scripts: str.isdigit() says yes to all of them
    "superscript": "⁰¹²³⁴⁵⁶⁷⁸⁹",
    "full-width": "０１２３４５６７８９",
    "arabic-indic": "٠١٢٣٤٥٦٧٨٩",
    "devanagari": "०१२३४५६७८९",
}


@pytest.mark.parametrize("script", sorted(_UNICODE_DIGITS))
@pytest.mark.parametrize("position", [3, 9, 15, 17])  # region, birth year, sequence, check character
def test_only_ascii_digits_count(script, position):
    """The same value written with other Unicode digits is refused: no crash (a 500 upstream), and no second
    spelling of one number (a second lookup hash, hence a second account for one person)."""
    number = "110105194912310011"
    assert validate_id_number(number) == number
    to_script = str.maketrans("0123456789", _UNICODE_DIGITS[script])
    with pytest.raises(InvalidIdentifier):
        validate_id_number(number[:position] + number[position].translate(to_script) + number[position + 1 :])
    with pytest.raises(InvalidIdentifier):
        validate_id_number(number.translate(to_script))


# --- GB 32100: unified social credit codes ------------------------------------------------------------------


def test_the_credit_code_example_is_valid():
    assert validate_uscc(GB32100_EXAMPLE) == GB32100_EXAMPLE
    assert validate_uscc(" 91350100m000100y43 ") == GB32100_EXAMPLE
    assert uscc_check_char(GB32100_EXAMPLE[:17]) == "3"


@pytest.mark.parametrize("letter", list("IOZSV"))
def test_letters_outside_the_alphabet_are_refused(letter):
    raw = GB32100_EXAMPLE[:8] + letter + GB32100_EXAMPLE[9:]
    with pytest.raises(InvalidIdentifier, match=letter):
        normalise_uscc(raw)
    with pytest.raises(InvalidIdentifier, match=letter):
        normalise_uscc(raw.lower())


@pytest.mark.parametrize("raw", ["", GB32100_EXAMPLE[:17], GB32100_EXAMPLE + "0"])
def test_credit_code_length_is_checked(raw):
    with pytest.raises(InvalidIdentifier, match="18 characters"):
        normalise_uscc(raw)


def test_normalise_does_not_check_the_checksum_but_validate_does():
    wrong = GB32100_EXAMPLE[:17] + "4"
    assert normalise_uscc(wrong) == wrong and not uscc_checksum_ok(wrong)
    with pytest.raises(InvalidIdentifier, match="check character"):
        validate_uscc(wrong)


@given(usccs())
def test_generated_credit_codes_pass(code):
    assert validate_uscc(code) == code


@given(usccs(), st.integers(0, 17), st.sampled_from(USCC_ALPHABET + "IOZSV"))
def test_any_single_character_change_of_a_credit_code_fails(code, position, replacement):
    assume(code[position] != replacement)
    with pytest.raises(InvalidIdentifier):
        validate_uscc(code[:position] + replacement + code[position + 1 :])


# --- phones and names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("+86 138-1234-5678", "13812345678"),
        ("13812345678", "13812345678"),
        (" 199 0000 1111 ", "19900001111"),
    ],
)
def test_phones_are_normalised(raw, normal):
    assert normalise_phone(raw) == normal


@pytest.mark.parametrize(
    "raw",
    [
        "12345678901",  # second digit 2: no such mobile range
        "1381234567",  # 10 digits
        "138123456789",  # 12 digits
        "+1 138-1234-5678",
        "23812345678",
        "1381234567a",
        "",
        "138１２３４５６７８",  # full-width digits: would be a second spelling of the same phone
        "138١٢٣٤٥٦٧٨",  # Arabic-Indic digits
    ],
)
def test_bad_phones_are_refused(raw):
    with pytest.raises(InvalidIdentifier):
        normalise_phone(raw)


def test_names_are_tidied_and_checked():
    assert normalise_name("  张   三 ") == "张 三"
    assert normalise_name("买买提·艾力") == "买买提·艾力"
    assert normalise_name("Mary O'Neil-Smith") == "Mary O'Neil-Smith"
    for bad in ("", "   ", "张3", "<script>", "x" * 65):
        with pytest.raises(InvalidIdentifier):
            normalise_name(bad)


# --- masking ------------------------------------------------------------------------------------------------


def test_masking_rules_used_for_profiles():
    assert mask("13812345678", 3, 4) == "138****5678"
    assert mask("张三", 1, 0) == "张*"
    assert mask("欧阳修", 1, 0) == "欧**"
    assert mask(GB11643_EXAMPLE, 3, 4) == "110" + "*" * 11 + "002X"


def test_short_values_never_reveal_more_than_half():
    assert mask("", 3, 4) == ""
    assert mask("a", 1, 0) == "*"
    assert mask("ab", 3, 4) == "a*"
    assert mask("abcd", 3, 4) == "ab**"


@given(st.text(alphabet=NO_STARS, min_size=2), st.integers(0, 8), st.integers(0, 8))
def test_a_masked_value_is_never_the_value(value, head, tail):
    masked = mask(value, head, tail)
    assert masked != value
    assert len(masked) == len(value)
    assert "*" in masked
    # Every character is either kept in place or starred, and at most head + tail are kept.
    kept = [i for i, c in enumerate(masked) if c != "*"]
    assert all(masked[i] == value[i] for i in kept)
    assert len(kept) <= head + tail


@given(st.text(alphabet=NO_STARS, min_size=1), st.integers(0, 8), st.integers(0, 8))
def test_masking_keeps_at_most_half_of_a_short_value(value, head, tail):
    assume(head + tail >= len(value))
    assert sum(c != "*" for c in mask(value, head, tail)) <= len(value) // 2


# --- field encryption ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cipher() -> FieldCipher:
    return FieldCipher(os.urandom(32), os.urandom(32))


@given(st.text())
def test_field_cipher_round_trip(cipher, plaintext):
    blob = cipher.encrypt("resident.name", plaintext)
    assert cipher.decrypt("resident.name", blob) == plaintext
    if len(plaintext.encode()) >= 8:  # shorter byte strings may turn up in random bytes by chance
        assert plaintext.encode() not in blob


def test_a_ciphertext_for_one_field_does_not_open_as_another(cipher):
    blob = cipher.encrypt("resident.name", "张三")
    with pytest.raises(InvalidTag):
        cipher.decrypt("resident.id_number", blob)


def test_a_ciphertext_does_not_open_under_another_key(cipher):
    other = FieldCipher(os.urandom(32), os.urandom(32))
    with pytest.raises(InvalidTag):
        other.decrypt("resident.name", cipher.encrypt("resident.name", "张三"))


def test_tampered_or_unversioned_ciphertexts_are_refused(cipher):
    blob = bytearray(cipher.encrypt("resident.phone", "13812345678"))
    blob[-1] ^= 1
    with pytest.raises(InvalidTag):
        cipher.decrypt("resident.phone", bytes(blob))
    with pytest.raises(ValueError, match="version"):
        cipher.decrypt("resident.phone", b"\x02" + bytes(blob[1:]))


def test_same_plaintext_encrypts_differently_each_time(cipher):
    first = cipher.encrypt("resident.phone", "13812345678")
    second = cipher.encrypt("resident.phone", "13812345678")
    assert first != second
    assert cipher.decrypt("resident.phone", first) == "13812345678"
    assert cipher.decrypt("resident.phone", second) == "13812345678"


@given(st.text(), st.text())
def test_lookup_hash_is_deterministic_and_field_separated(cipher, value, other):
    assert cipher.lookup_hash("resident.phone", value) == cipher.lookup_hash("resident.phone", value)
    assert len(cipher.lookup_hash("resident.phone", value)) == 32
    assert cipher.lookup_hash("resident.phone", value) != cipher.lookup_hash("resident.id_number", value)
    if value != other:
        assert cipher.lookup_hash("resident.phone", value) != cipher.lookup_hash("resident.phone", other)


def test_lookup_hash_depends_on_the_index_key():
    key = os.urandom(32)
    one, same = FieldCipher(key, b"i" * 32), FieldCipher(os.urandom(32), b"i" * 32)
    other = FieldCipher(key, b"j" * 32)
    assert one.lookup_hash("f", "v") == same.lookup_hash("f", "v")  # the data key plays no part
    assert one.lookup_hash("f", "v") != other.lookup_hash("f", "v")
