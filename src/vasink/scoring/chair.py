"""CHAIR object hallucination in captions (Rohrbach et al., 2018).

    >>> r = chair(["Two dogs and a cat on a couch."], [["dog", "couch"]])
    >>> r["chair_s"], r["chair_i"], r["recall"]
    (1.0, 0.3333333333333333, 1.0)

A caption is lower-cased and cut into words; each word is singularized; known multi-word phrases are
read as one word ("hot dog" is food, not a dog); each word that is a surface form of an object is a
mention of that object. A mention of an object not among the image's ground-truth objects is a
hallucination.

The reference implementation lemmatizes with NLTK's WordNet (no download is possible here), so words
are singularized by rules instead: a word already in the vocabulary stays, otherwise the first of its
irregular / suffix-stripped forms that is in the vocabulary is taken. For nouns this gives WordNet's
answer; verb forms are not lemmatized ("skiing" is no mention of skis, as with the original metric's
singularizer).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from . import coco_objects

# (plural suffix, singular suffix), tried in order; the first result in the vocabulary wins
_PLURAL_SUFFIXES = (
    ("people", "person"), ("children", "child"), ("men", "man"), ("mice", "mouse"), ("geese", "goose"),
    ("teeth", "tooth"), ("feet", "foot"), ("oxen", "ox"),
    ("ives", "ife"), ("ves", "f"), ("ies", "y"), ("oes", "o"), ("es", ""), ("s", ""),
)
_WORD = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")  # hyphenated words stay one word, as NLTK tokenizes them


@dataclass(frozen=True)
class ObjectVocabulary:
    """How caption words map to objects.

    ``synonyms`` maps a surface form (one or more words, singular) to its canonical object name;
    ``compounds`` maps a phrase of two or more words to the single word it is read as (which may be
    no object at all: "home plate"); ``silenced_by`` maps a word to another whose presence in the same
    caption silences it.
    """

    synonyms: Mapping[str, str]
    compounds: Mapping[str, str] = field(default_factory=dict)
    silenced_by: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, str] | Iterable[str]) -> ObjectVocabulary:
        """A vocabulary from ``{surface form: object}`` (or a list of object names); multi-word forms
        become compounds that stand for themselves."""
        if not isinstance(mapping, Mapping):
            mapping = {name: name for name in mapping}
        synonyms = {_clean(k): _clean(v) for k, v in mapping.items()}
        for name in set(synonyms.values()):
            synonyms.setdefault(name, name)
        if not synonyms:
            raise ValueError("the object vocabulary is empty")
        compounds = {k: k for k in synonyms if " " in k}
        return cls(synonyms=synonyms, compounds=compounds)

    @cached_property
    def objects(self) -> frozenset[str]:
        return frozenset(self.synonyms.values())

    @cached_property
    def known_words(self) -> frozenset[str]:
        """Every single word the singularizer should land on."""
        phrases = [*self.synonyms, *self.synonyms.values(), *self.compounds, *self.compounds.values(),
                   *self.silenced_by, *self.silenced_by.values()]
        return frozenset(word for phrase in phrases for word in phrase.split())

    @cached_property
    def _compound_lengths(self) -> tuple[int, ...]:
        return tuple(sorted({len(c.split()) for c in self.compounds}, reverse=True))

    def singular(self, word: str) -> str:
        known = self.known_words
        if word in known:
            return word
        for plural, singular in _PLURAL_SUFFIXES:
            if word.endswith(plural):
                candidate = word[: len(word) - len(plural)] + singular
                if candidate in known:
                    return candidate
        return word

    def words(self, caption: str) -> list[str]:
        """Singular words of a caption, with compounds joined (longest phrase first)."""
        words = [self.singular(w) for w in _WORD.findall(caption.lower())]
        out, i = [], 0
        while i < len(words):
            for n in self._compound_lengths:
                phrase = " ".join(words[i:i + n])
                if phrase in self.compounds:
                    out.append(self.compounds[phrase])
                    i += n
                    break
            else:
                out.append(words[i])
                i += 1
        present = set(out)
        return [w for w in out if self.silenced_by.get(w) not in present]

    def mentions(self, caption: str) -> list[tuple[str, str]]:
        """(surface word, object) for each object mention, in caption order, repeats kept."""
        return [(w, self.synonyms[w]) for w in self.words(caption) if w in self.synonyms]

    def canonical(self, name: str) -> str:
        """The object a ground-truth name stands for; ValueError if the vocabulary does not know it."""
        clean = _clean(name)
        if clean in self.objects:
            return clean
        single = " ".join(self.singular(w) for w in clean.split())
        if single in self.synonyms:
            return self.synonyms[single]
        close = difflib.get_close_matches(clean, sorted(self.objects), n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown object name {name!r} (not in the object vocabulary){hint}")


def _clean(text: str) -> str:
    return " ".join(text.lower().split())


def _coco_vocabulary() -> ObjectVocabulary:
    synonyms: dict[str, str] = {}
    for name, forms in coco_objects.SYNONYMS.items():
        synonyms[name] = name
        for form in filter(None, (f.strip() for f in forms.split(","))):
            synonyms[form] = name
    return ObjectVocabulary(synonyms=synonyms, compounds=dict(coco_objects.DOUBLE_WORDS),
                            silenced_by=dict(coco_objects.SILENCED_BY))


COCO_VOCABULARY = _coco_vocabulary()


def chair(captions: Sequence[str], objects: Sequence[Iterable[str]],
          vocabulary: ObjectVocabulary | Mapping[str, str] | Iterable[str] | None = None) -> dict:
    """CHAIR_s, CHAIR_i and object recall of ``captions`` against ground-truth ``objects`` (one
    collection of object names per caption).

    ``chair_s`` = captions with at least one hallucinated mention / captions; ``chair_i`` = hallucinated
    mentions / all mentions (0 when nothing is mentioned); ``recall`` = ground-truth objects mentioned /
    ground-truth objects, summed over captions (0 when there are none). ``per_caption`` lists, per
    caption, the objects ``mentioned`` and ``hallucinated`` (in order, repeats kept) and the
    ``ground_truth`` set (sorted). ``vocabulary`` defaults to COCO's; pass ``{word: object}`` (or a list
    of object names) to score other objects, such as the organism's shapes.
    """
    if isinstance(captions, str):
        raise TypeError("captions must be a sequence of strings, not one string")
    if len(captions) != len(objects):
        raise ValueError(f"{len(captions)} captions but {len(objects)} ground-truth object lists")
    if not captions:
        raise ValueError("no captions to score")
    if vocabulary is None:
        vocab = COCO_VOCABULARY
    elif isinstance(vocabulary, ObjectVocabulary):
        vocab = vocabulary
    else:
        vocab = ObjectVocabulary.from_mapping(vocabulary)

    details = []
    n_hallucinated_captions = n_mentions = n_hallucinated = n_truth = n_recalled = 0
    for i, (caption, truth_names) in enumerate(zip(captions, objects)):
        if not isinstance(caption, str):
            raise TypeError(f"captions[{i}] is {type(caption).__name__}, not str")
        if isinstance(truth_names, str):
            raise TypeError(f"objects[{i}] must be a collection of object names, not one string")
        try:
            truth = {vocab.canonical(name) for name in truth_names}
        except ValueError as err:
            raise ValueError(f"objects[{i}]: {err}") from None
        mentioned = [obj for _, obj in vocab.mentions(caption)]
        hallucinated = [obj for obj in mentioned if obj not in truth]
        n_mentions += len(mentioned)
        n_hallucinated += len(hallucinated)
        n_hallucinated_captions += bool(hallucinated)
        n_truth += len(truth)
        n_recalled += len(truth & set(mentioned))
        details.append({"mentioned": mentioned, "hallucinated": hallucinated, "ground_truth": sorted(truth)})
    return {
        "chair_s": n_hallucinated_captions / len(captions),
        "chair_i": n_hallucinated / n_mentions if n_mentions else 0.0,
        "recall": n_recalled / n_truth if n_truth else 0.0,
        "per_caption": details,
    }
