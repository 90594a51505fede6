from __future__ import annotations

import pytest

from fewshot.data.styles import COLUMNS, StylesFormatError, read_styles
from fewshot.utils.errors import UserError
from tests.conftest import HEADER, style_row


def _write(tmp_path, lines: list[str]):
    path = tmp_path / "styles.csv"
    path.write_text("\n".join([HEADER, *lines]) + "\n")
    return path


def test_read_styles_keeps_unquoted_commas_in_display_name(tmp_path):
    path = _write(tmp_path, [
        style_row(1, "Shirts", name="Boss Men Perfume, After Shave Balm and Shower Gel Set"),
        style_row(2, "Flip Flops", name="Converse Unisex Navy Blue Liv,Laugh,Love Flip-flops"),
        style_row(3, "Shorts", name='Nike Women\'s EM Tempo 3.5" Pink Short'),
    ])
    df = read_styles(path)
    assert list(df.columns) == list(COLUMNS)
    assert df["productDisplayName"].tolist() == [
        "Boss Men Perfume, After Shave Balm and Shower Gel Set",
        "Converse Unisex Navy Blue Liv,Laugh,Love Flip-flops",
        'Nike Women\'s EM Tempo 3.5" Pink Short',
    ]
    assert df["articleType"].tolist() == ["Shirts", "Flip Flops", "Shorts"]


def test_read_styles_types_id_as_int_and_year_as_nullable_int(tmp_path):
    df = read_styles(_write(tmp_path, [style_row(10, "Shirts", 2011), style_row(11, "Shirts", "")]))
    assert str(df["id"].dtype) == "int64"
    assert str(df["year"].dtype) == "Int64"
    assert df["year"].iloc[0] == 2011 and df["year"].isna().iloc[1]


def test_read_styles_turns_empty_text_fields_into_missing_values(tmp_path):
    df = read_styles(_write(tmp_path, ["5,Men,Apparel,Topwear,Shirts,Blue,,2012,,A shirt"]))
    assert df["season"].isna().item() and df["usage"].isna().item()


@pytest.mark.parametrize(
    ("bad_line", "lineno", "fragment"),
    [
        ("7,Men,Apparel,Topwear,Shirts,Blue,Summer,2012", 3, "8 fields, expected 10"),
        ("x7,Men,Apparel,Topwear,Shirts,Blue,Summer,2012,Casual,A", 3, "id 'x7' is not"),
        ("1,Men,Apparel,Topwear,Shirts,Blue,Summer,2012,Casual,Again", 3, "duplicate id 1 (first on line 2)"),
        ("8,Men,Apparel,Topwear,Shirts,Blue,Summer,20x2,Casual,A", 3, "year '20x2' is not an integer"),
    ],
)
def test_read_styles_raises_naming_file_line_and_problem(tmp_path, bad_line, lineno, fragment):
    path = _write(tmp_path, [style_row(1, "Shirts"), bad_line, style_row(9, "Jeans")])
    with pytest.raises(StylesFormatError) as info:
        read_styles(path)
    message = str(info.value)
    assert str(path) in message and f"line {lineno}" in message and fragment in message
    # says what to do, in the words of the command line and the config, not of a Python keyword argument
    assert "--skip-bad-rows" in message and "data.skip_bad_rows" in message and "on_bad_rows" not in message


def test_read_styles_skip_reports_every_bad_row_and_keeps_the_rest(tmp_path):
    path = _write(tmp_path, [style_row(1, "Shirts"), "2,Men,short", style_row(1, "Jeans"), style_row(3, "Jeans")])
    with pytest.warns(UserWarning, match=r"skipped 2 malformed row\(s\): line 3: 3 fields.*line 4: duplicate id 1"):
        df = read_styles(path, on_bad_rows="skip")
    assert df["id"].tolist() == [1, 3]
    assert [(b.line, b.reason.split(" (")[0]) for b in df.attrs["bad_rows"]] == [
        (3, "3 fields, expected 10"), (4, "duplicate id 1")]


def test_read_styles_rejects_a_wrong_header(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(StylesFormatError, match="line 1: header"):
        read_styles(path)


def test_read_styles_rejects_unknown_on_bad_rows_value(tmp_path):
    with pytest.raises(ValueError, match="'raise' or 'skip'"):
        read_styles(_write(tmp_path, [style_row(1, "Shirts")]), on_bad_rows="ignore")


def test_read_styles_refuses_a_file_that_is_not_utf8_naming_the_line(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_bytes(("\n".join([HEADER, style_row(1, "Shirts")]) + "\n").encode() + b"2,Men,Caf\xe9\n")
    with pytest.raises(StylesFormatError, match=r"styles.csv, line 3: not UTF-8 text.*save the file as UTF-8"):
        read_styles(path)


def test_read_styles_missing_file_is_a_user_error_and_still_a_file_not_found_error(tmp_path):
    with pytest.raises(UserError, match="no such styles.csv; point --data") as info:
        read_styles(tmp_path / "styles.csv")
    assert isinstance(info.value, FileNotFoundError)  # what callers caught before


def test_read_styles_accepts_crlf_line_endings(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_bytes(("\r\n".join([HEADER, style_row(1, "Shirts"), style_row(2, "Jeans")]) + "\r\n").encode())
    df = read_styles(path)
    assert df["productDisplayName"].tolist() == ["Brand Men Blue Shirts", "Brand Men Blue Jeans"]


@pytest.mark.realdata
def test_real_styles_has_all_rows_and_the_22_extra_comma_rows(real_data):
    df = read_styles(real_data / "styles.csv")
    assert len(df) == 44_446
    assert df["id"].is_unique
    assert int(df["productDisplayName"].str.contains(",").sum()) == 22
    assert df["year"].isna().sum() == 1 and int(df.loc[df["year"].isna(), "id"].item()) == 53781
    assert df["season"].isna().sum() == 21 and df["usage"].isna().sum() == 1
    assert df["articleType"].nunique() == 143
    row = df.loc[df["id"] == 23124].iloc[0]
    assert row["productDisplayName"] == "Converse Unisex Navy Blue Liv,Laugh,Love Flip-flops"
    assert row["year"] == 2013 and row["articleType"] == "Flip Flops"
