"""BFCL call match: the parser reads the wrappings models use, the matcher accepts only what the gold allows."""

from __future__ import annotations

import pytest

from specplug.bench.quality.bfcl import calls_match, parse_tool_calls, score, value_matches

# Real BFCL v4 gold shapes (simple_python_0, simple_python_2, a parallel and a nested-dict entry).
TRIANGLE = {"ground_truth": [{"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["units", ""]}}]}
HYPOT = {"ground_truth": [{"math.hypot": {"x": [4], "y": [5], "z": ["", 0]}}]}
PARALLEL = {
    "ground_truth": [
        {"spotify.play": {"artist": ["Taylor Swift"], "duration": [20]}},
        {"spotify.play": {"artist": ["Maroon 5"], "duration": [15]}},
    ]
}
NESTED = {
    "ground_truth": [{"book_hotel": {"stay": [{"city": ["New York", "NYC"], "nights": [3], "breakfast": ["", False]}]}}]
}


def tagged(name: str, arguments: str) -> str:
    return f'<tool_call>{{"name": "{name}", "arguments": {arguments}}}</tool_call>'


def test_a_correct_call_in_the_prompted_format_matches() -> None:
    # SmolLM2-135M's actual greedy reply to simple_python_0.
    assert score(
        '<tool_call>{"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5}}</tool_call>', TRIANGLE
    )
    assert score(tagged("calculate_triangle_area", '{"base": 10, "height": 5, "unit": "Units"}'), TRIANGLE)
    assert score(tagged("math.hypot", '{"x": 4, "y": 5.0, "z": 0}'), HYPOT)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (tagged("calculate_triangle_area", '{"base": 10}'), "required argument missing"),
        (tagged("calculate_triangle_area", '{"base": 10, "height": 6}'), "wrong value"),
        (tagged("calculate_triangle_area", '{"base": "10", "height": 5}'), "number written as a string"),
        (tagged("calculate_triangle_area", '{"base": 10, "height": 5, "color": "red"}'), "argument not in gold"),
        (tagged("calculate_triangle_area", '{"base": 10, "height": 5, "unit": "cm"}'), "optional with a bad value"),
        (tagged("calculate_area", '{"base": 10, "height": 5}'), "wrong function name"),
        ('<tool_call>{"name": "calculate_triangle_area", "arguments": {"base": 10, "hei', "truncated call"),
        ("The area is 25 square units.", "prose, no call"),
        ("", "empty reply"),
        (tagged("calculate_triangle_area", '{"base": 10, "height": 5}') * 2, "one call too many"),
    ],
)
def test_wrong_calls_do_not_match(text: str, why: str) -> None:
    assert not score(text, TRIANGLE), why


def test_the_math_factorial_reply_smollm2_gives_is_wrong() -> None:
    gold = {"ground_truth": [{"math.factorial": {"number": [5]}}]}
    assert not score(tagged("math.factorial", '{"n": 5, "unit": "celsius"}'), gold)
    assert score(tagged("math.factorial", '{"number": 5}'), gold)


def test_lenient_about_wrapping() -> None:
    call = '{"name": "math.hypot", "arguments": {"x": 4, "y": 5}}'
    assert score(f"Sure! Here you go:\n<tool_call>\n```json\n{call}\n```\n</tool_call>\nDone.", HYPOT)
    assert score(f"```json\n{call}\n```", HYPOT)
    assert score(f"I will call {call} now.", HYPOT)
    assert score(f"<tool_call>{call}", HYPOT)  # closing tag cut off by max_tokens after a complete JSON object
    assert score('<tool_call>{"name": "math.hypot", "parameters": {"x": 4, "y": 5}}</tool_call>', HYPOT)
    assert score('<tool_call>{"name": "math.hypot", "arguments": "{\\"x\\": 4, \\"y\\": 5}"}</tool_call>', HYPOT)


def test_parallel_calls_match_in_any_order_and_need_all() -> None:
    swift = tagged("spotify.play", '{"artist": "taylor swift", "duration": 20}')
    maroon = tagged("spotify.play", '{"artist": "Maroon 5", "duration": 15}')
    assert score(swift + "\n" + maroon, PARALLEL)
    assert score(maroon + swift, PARALLEL)
    assert score(f"<tool_call>[{swift[11:-12]}, {maroon[11:-12]}]</tool_call>", PARALLEL)  # a list in one block
    assert not score(swift, PARALLEL)
    assert not score(swift + swift, PARALLEL)


def test_nested_dict_gold() -> None:
    assert score(tagged("book_hotel", '{"stay": {"city": "NYC", "nights": 3}}'), NESTED)
    assert score(tagged("book_hotel", '{"stay": {"city": "New York", "nights": 3, "breakfast": false}}'), NESTED)
    assert not score(tagged("book_hotel", '{"stay": {"city": "NYC", "nights": 3, "breakfast": true}}'), NESTED)
    assert not score(tagged("book_hotel", '{"stay": {"city": "NYC"}}'), NESTED)
    assert not score(tagged("book_hotel", '{"stay": {"city": "NYC", "nights": 3, "pool": true}}'), NESTED)


def test_value_rules() -> None:
    assert value_matches("New-York City", "new york city")  # BFCL's string standardization
    assert value_matches(5, 5.0) and value_matches(2.5, 2.5)
    assert not value_matches(True, 1) and not value_matches(1, True)  # bool is not an int here
    assert value_matches([1, "a b"], [1, "ab"]) and not value_matches([1, 2], [2, 1])
    assert value_matches(10, "10")  # Java/JavaScript gold writes literals as strings
    assert value_matches(True, "true") and not value_matches(False, "true")


def test_parse_tool_calls_ignores_non_calls() -> None:
    assert parse_tool_calls('{"a": 1} and [1, 2] and {"name": 3}') == []
    assert parse_tool_calls(tagged("f", "{}")) == [{"name": "f", "arguments": {}}]
    assert not calls_match([], [])


def test_lists_of_dicts_and_empty_gold_as_bfcl_live_writes_them() -> None:
    # Shapes from live_multiple_63-25-0 and live_simple_112-68-0.
    order = {
        "ground_truth": [
            {
                "uber.eat.order": {
                    "restaurant_id": ["McDonald's"],
                    "items": [[{"item": ["burgers"], "quantity": [5]}, {"item": ["chicken wings"], "quantity": [6]}]],
                }
            }
        ]
    }
    items = '[{"item": "burgers", "quantity": 5}, {"item": "chicken wings", "quantity": 6}]'
    assert score(tagged("uber.eat.order", f'{{"restaurant_id": "mcdonald\'s", "items": {items}}}'), order)
    assert not score(tagged("uber.eat.order", f'{{"restaurant_id": "KFC", "items": {items}}}'), order)
    one_item = '[{"item": "burgers"}]'
    assert not score(tagged("uber.eat.order", f'{{"restaurant_id": "McDonald\'s", "items": {one_item}}}'), order)
    record = {"ground_truth": [{"record": {"atm_finder_start": [], "outofscope": [["what is the weather like"]]}}]}
    assert score(tagged("record", '{"outofscope": ["What is the weather like"]}'), record)
    assert not score(tagged("record", '{"outofscope": ["What is the weather like?"]}'), record)  # as in BFCL
    assert score(tagged("record", '{"atm_finder_start": [], "outofscope": ["what is the weather like"]}'), record)
    assert not score(
        tagged("record", '{"atm_finder_start": ["atm"], "outofscope": ["what is the weather like"]}'), record
    )
