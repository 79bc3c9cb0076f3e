"""IFEval-style verifiable instructions (Zhou et al. 2023, arXiv 2311.07911): does a response follow each one?

A row's constraints are a JSON list in its `answer`, each the IFEval instruction id plus that instruction's
kwargs, so google/IFEval rows convert one to one (`instruction_id_list[i]` + `kwargs[i]`):

    >>> followed(
    ...     "Hello world. Bye.", [{"id": "length_constraints:number_words", "relation": "at least", "num_words": 3}]
    ... )
    [True]
    >>> followed("hello, WORLD", [{"id": "punctuation:no_comma"}, {"id": "change_case:english_lowercase"}])
    [False, False]

Each check is a function `(response, **kwargs) -> bool` in CHECKS; the definitions follow IFEval's reference
implementation (google-research/instruction_following_eval) except `language:response_language`, which needs a
language detector and is not supported (an unknown id is an error, never a silent pass).
"""

from __future__ import annotations

import json
import re

_WORD = re.compile(r"\b\w+\b")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s+|$)")


def _compare(count: int, relation: str, n: int) -> bool:
    if relation == "less than":
        return count < n
    if relation == "at least":
        return count >= n
    raise ValueError(f"relation must be 'less than' or 'at least', got {relation!r}")


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def number_words(response: str, num_words: int, relation: str) -> bool:
    return _compare(len(_words(response)), relation, num_words)


def number_sentences(response: str, num_sentences: int, relation: str) -> bool:
    return _compare(len([s for s in _SENTENCE_END.split(response) if s.strip()]), relation, num_sentences)


def number_paragraphs(response: str, num_paragraphs: int) -> bool:
    """Paragraphs separated by the markdown divider `***` (IFEval's definition); none may be empty."""
    parts = re.split(r"\s?\*\*\*\s?", response.strip())
    return len(parts) == num_paragraphs and all(p.strip() for p in parts)


def nth_paragraph_first_word(response: str, num_paragraphs: int, nth_paragraph: int, first_word: str) -> bool:
    """Paragraphs separated by blank lines; paragraph `nth_paragraph` (1-based) starts with `first_word`."""
    parts = [p for p in re.split(r"\n\s*\n", response.strip()) if p.strip()]
    if len(parts) != num_paragraphs or not 1 <= nth_paragraph <= len(parts):
        return False
    words = _words(parts[nth_paragraph - 1])
    return bool(words) and words[0].lower() == first_word.lower()


def keywords_existence(response: str, keywords: list[str]) -> bool:
    return all(re.search(re.escape(k), response, re.IGNORECASE) for k in keywords)


def keyword_frequency(response: str, keyword: str, frequency: int, relation: str) -> bool:
    return _compare(len(re.findall(re.escape(keyword), response, re.IGNORECASE)), relation, frequency)


def forbidden_words(response: str, forbidden_words: list[str]) -> bool:
    return not any(re.search(rf"\b{re.escape(w)}\b", response, re.IGNORECASE) for w in forbidden_words)


def letter_frequency(response: str, letter: str, let_frequency: int, let_relation: str) -> bool:
    return _compare(response.lower().count(letter.lower()), let_relation, let_frequency)


def number_placeholders(response: str, num_placeholders: int) -> bool:
    return len(re.findall(r"\[.*?\]", response)) >= num_placeholders


def postscript(response: str, postscript_marker: str) -> bool:
    marker = re.escape(postscript_marker.strip())
    return re.search(rf"\s*{marker}.*$", response, re.IGNORECASE | re.MULTILINE) is not None


def number_bullet_lists(response: str, num_bullets: int) -> bool:
    """Exactly `num_bullets` markdown bullets (`* item` or `- item` lines)."""
    return len(re.findall(r"^\s*[*-]\s+\S", response, re.MULTILINE)) == num_bullets


def constrained_response(response: str) -> bool:
    return any(option in response for option in ("My answer is yes.", "My answer is no.", "My answer is maybe."))


def number_highlighted_sections(response: str, num_highlights: int) -> bool:
    found = [h for h in re.findall(r"\*[^\n*]+\*", response) + re.findall(r"\*\*[^\n*]+\*\*", response)]
    return len([h for h in found if h.strip("*").strip()]) >= num_highlights


def multiple_sections(response: str, section_spliter: str, num_sections: int) -> bool:
    parts = re.split(rf"\s?{re.escape(section_spliter)}\s?\d+\s?", response)
    return len(parts) - 1 >= num_sections


def json_format(response: str) -> bool:
    text = response.strip().removeprefix("```json").removeprefix("```Json").removeprefix("```JSON")
    text = text.removeprefix("```").removesuffix("```").strip()
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def title(response: str) -> bool:
    return any(t.strip() for t in re.findall(r"<<([^\n]+)>>", response))


def two_responses(response: str) -> bool:
    parts = response.split("******")
    return len(parts) == 2 and all(p.strip() for p in parts) and parts[0].strip() != parts[1].strip()


def repeat_prompt(response: str, prompt_to_repeat: str) -> bool:
    return response.strip().lower().startswith(prompt_to_repeat.strip().lower())


def end_checker(response: str, end_phrase: str) -> bool:
    return response.strip().strip('"').lower().endswith(end_phrase.strip().lower())


def quotation(response: str) -> bool:
    text = response.strip()
    return len(text) > 1 and text[0] == '"' and text[-1] == '"'


def capital_word_frequency(response: str, capital_frequency: int, capital_relation: str) -> bool:
    return _compare(len([w for w in _words(response) if w.isupper()]), capital_relation, capital_frequency)


def english_capital(response: str) -> bool:
    return response.isupper()


def english_lowercase(response: str) -> bool:
    return response.islower()


def no_comma(response: str) -> bool:
    return "," not in response


CHECKS = {
    "length_constraints:number_words": number_words,
    "length_constraints:number_sentences": number_sentences,
    "length_constraints:number_paragraphs": number_paragraphs,
    "length_constraints:nth_paragraph_first_word": nth_paragraph_first_word,
    "keywords:existence": keywords_existence,
    "keywords:frequency": keyword_frequency,
    "keywords:forbidden_words": forbidden_words,
    "keywords:letter_frequency": letter_frequency,
    "detectable_content:number_placeholders": number_placeholders,
    "detectable_content:postscript": postscript,
    "detectable_format:number_bullet_lists": number_bullet_lists,
    "detectable_format:constrained_response": constrained_response,
    "detectable_format:number_highlighted_sections": number_highlighted_sections,
    "detectable_format:multiple_sections": multiple_sections,
    "detectable_format:json_format": json_format,
    "detectable_format:title": title,
    "combination:two_responses": two_responses,
    "combination:repeat_prompt": repeat_prompt,
    "startend:end_checker": end_checker,
    "startend:quotation": quotation,
    "change_case:capital_word_frequency": capital_word_frequency,
    "change_case:english_capital": english_capital,
    "change_case:english_lowercase": english_lowercase,
    "punctuation:no_comma": no_comma,
}


def parse_constraints(spec: str | list) -> list[dict]:
    """A row's constraints (a JSON string or a list of `{"id": ..., **kwargs}`), checked against CHECKS."""
    constraints = json.loads(spec) if isinstance(spec, str) else spec
    if isinstance(constraints, dict):
        constraints = [constraints]
    for c in constraints:
        if not isinstance(c, dict) or c.get("id") not in CHECKS:
            got = c.get("id") if isinstance(c, dict) else c
            raise ValueError(f"unknown instruction {got!r}; supported: {sorted(CHECKS)}")
    return constraints


def followed(response: str, constraints: str | list) -> list[bool]:
    """Whether `response` follows each constraint, in order (kwargs that are None are IFEval's 'unset')."""
    out = []
    for c in parse_constraints(constraints):
        kwargs = {k: v for k, v in c.items() if k != "id" and v is not None}
        out.append(bool(CHECKS[c["id"]](response, **kwargs)))
    return out
