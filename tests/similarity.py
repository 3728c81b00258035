"""Near-duplicate similarity worked out without domaintune's code: word 3-gram sets (text case-folded,
punctuation as space, as data.dedup.shingle=word reads it) and their exact Jaccard, over every pair that
shares a 3-gram."""

import re
from collections import defaultdict


def word_trigrams(text: str) -> frozenset[str]:
    words = re.sub(r"[^\w\s]", " ", text.casefold()).split()
    return frozenset(" ".join(words[i:i + 3]) for i in range(max(len(words) - 2, 1)))


def similar_pairs(left: list[str], right: list[str], threshold: float) -> set[tuple[int, int]]:
    """(i, j) for every left[i], right[j] whose trigram Jaccard reaches `threshold`."""
    right_sets = [word_trigrams(t) for t in right]
    holders = defaultdict(set)
    for j, grams in enumerate(right_sets):
        for gram in grams:
            holders[gram].add(j)
    pairs = set()
    for i, text in enumerate(left):
        grams = word_trigrams(text)
        for j in set().union(*(holders[g] for g in grams)):
            if len(grams & right_sets[j]) / len(grams | right_sets[j]) >= threshold:
                pairs.add((i, j))
    return pairs
