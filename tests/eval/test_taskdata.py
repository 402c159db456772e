"""heldout_lambada passages: LAMBADA-style targets (content words the passage already used)."""

from __future__ import annotations

import re

from eval.taskdata import STOP_WORDS, lastword_passages

STORY = (
    "The old king walked through the gardens of the palace every morning, and the servants "
    "knew that the king liked to stop at the fountain where his daughter had once played. "
    "On the day of the storm the gardens were empty, the fountain was silent, and nobody "
    "expected to see anyone outside. Yet when the thunder rolled over the walls, the guards "
    "saw a figure standing alone by the water, wrapped in a grey cloak, and they knew it was "
    "the king. They ran down to the fountain and asked the king to come back inside."
)


def targets(passages: list[str]) -> list[str]:
    return [p.split(" ")[-1] for p in passages]


def test_targets_are_content_words_that_occur_earlier():
    passages = lastword_passages(STORY, min_words=40)
    assert targets(passages) == ["fountain", "king"]
    for passage in passages:
        *context, target = passage.split(" ")
        assert len(context) >= 40 and target.lower() not in STOP_WORDS
        assert target.lower() in {re.sub(r"[^a-z]", "", w.lower()) for w in context}
    # consecutive: the second passage starts right after the first target
    words = STORY.split()
    assert passages[0] == " ".join(words[: len(passages[0].split())])
    assert passages[1].split(" ")[0] == words[len(passages[0].split())]


def test_trailing_punctuation_is_dropped_from_the_target():
    text = " ".join(["river"] + [f"w{i}" for i in range(45)] + ["the", "river."])
    assert targets(lastword_passages(text, min_words=40)) == ["river"]


def test_stop_words_and_new_words_are_never_targets():
    # every word after the context is either a stop word seen before or a word never seen before
    context = ["the", "and", "of"] * 15
    text = " ".join(context + ["the", "and", "novel", "of", "unseen"])
    assert lastword_passages(text, min_words=40) == []
