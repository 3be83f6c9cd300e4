"""The embedded quick-start dataset: real-world facts a small instruct model is likely to know.

Facts live in ``quickstart_facts.tsv`` next to this module (relation, subject, true object); the
CounterFact-style templates per relation live here. Each fact becomes one normalised record:

* ``target_new``: a counterfactual object drawn with the seed from the same relation's other objects;
* ``paraphrase_prompts``: the relation's two paraphrase templates, filled;
* ``neighborhood``: other subjects of the same relation, those sharing the true object first (as in
  CounterFact), each with its own true object; subjects whose object is ``target_new`` are left out so
  a neighbour never expects the edited answer;
* ``case_id``: the fact's row index in the table, so ids stay stable when facts are appended.

Dataset spec (``kind: quickstart``): ``seed`` (int, default 0) draws the counterfactuals and neighbours.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from massedit.io import sha256_file

from .records import validate_record

SPEC_KEYS = frozenset({"seed"})
TABLE = "quickstart_facts.tsv"
N_NEIGHBOURS = 5


@dataclass(frozen=True)
class Relation:
    prompt: str
    paraphrases: tuple[str, str]
    generation: tuple[str, ...]


# Templates never start with "{}" where subjects may begin with a lower-case article or noun
# ("the Eiffel Tower", "gold", "dolphins"), so every filled text reads as a sentence.
RELATIONS: dict[str, Relation] = {
    "capital": Relation(
        "The capital of {} is",
        ("{}'s capital city is", "The capital city of {} is"),
        ("{} is known for", "The people of {}")),
    "official_language": Relation(
        "The official language of {} is",
        ("{}'s official language is", "In {}, the official language is"),
        ("People who live in {}", "{} is known for")),
    "continent": Relation(
        "{} is located in the continent of",
        ("{} is a country in the continent of", "The continent where {} lies is"),
        ("The history of {}", "{} is famous for")),
    "currency": Relation(
        "The currency of {} is the",
        ("The official currency of {} is the", "In {}, people pay with the"),
        ("The economy of {}", "{} is known for")),
    "city_country": Relation(
        "{} is located in the country of",
        ("The city of {} is in the country of", "{} is a large city in the country of"),
        ("The streets of {}", "{} is famous for")),
    "landmark_city": Relation(
        "You can visit {} in",
        ("Tourists who want to see {} travel to", "The city that is home to {} is"),
        ("Visitors to {} often", "The history of {}")),
    "product_company": Relation(
        "The company behind {} is",
        ("The maker of {} is", "The company responsible for {} is"),
        ("People use {} to", "The best thing about {} is")),
    "athlete_sport": Relation(
        "{} professionally plays the sport of",
        ("The sport associated with {} is", "{} became famous playing"),
        ("{} is best known for", "The career of {}")),
    "musician_instrument": Relation(
        "{} is famous for playing the",
        ("The instrument played by {} is the", "{} became known as a master of the"),
        ("The music of {}", "{} is remembered for")),
    "chemical_symbol": Relation(
        "The chemical symbol for {} is",
        ("In chemistry, the symbol for {} is", "The element {} has the chemical symbol"),
        ("The element {} is", "In industry, {} is used for")),
    "animal_class": Relation(
        "Biologists classify {} as",
        ("In zoology, {} are considered to be", "Scientifically, {} belong to the group of"),
        ("The natural habitat of {} is", "Many people think that {}")),
}


@dataclass(frozen=True)
class Fact:
    relation: str
    subject: str
    object: str


def table_path() -> Path:
    return Path(str(resources.files(__package__) / TABLE))


def load_facts(path: str | Path | None = None) -> list[Fact]:
    """Read the fact table; errors name the file and line."""
    path = Path(path) if path is not None else table_path()
    facts, seen, header = [], {}, None
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            cols = line.split("\t")
            if header is None:
                header = cols
                if cols != ["relation", "subject", "object"]:
                    raise ValueError(f"{path}:{lineno}: expected header 'relation<TAB>subject<TAB>object'")
                continue
            if len(cols) != 3 or not all(c.strip() == c and c for c in cols):
                raise ValueError(f"{path}:{lineno}: expected 3 non-empty tab-separated fields without "
                                 f"surrounding spaces, got {cols!r}")
            fact = Fact(*cols)
            if fact.relation not in RELATIONS:
                raise ValueError(f"{path}:{lineno}: unknown relation {fact.relation!r}; known: {sorted(RELATIONS)}")
            key = (fact.relation, fact.subject)
            if key in seen:
                raise ValueError(f"{path}:{lineno}: duplicate fact {key}, first on line {seen[key]}")
            seen[key] = lineno
            facts.append(fact)
    return facts


def build_records(seed: int = 0, facts: list[Fact] | None = None) -> list[dict]:
    """Normalised records for every fact, deterministic for a given seed."""
    facts = load_facts() if facts is None else facts
    by_relation: dict[str, list[int]] = {}
    for i, fact in enumerate(facts):
        by_relation.setdefault(fact.relation, []).append(i)

    records = []
    for i, fact in enumerate(facts):
        rel = RELATIONS[fact.relation]
        members = by_relation[fact.relation]
        # one generator per record (string seeds hash stably), so a record does not depend on the others
        rng = random.Random(f"massedit-quickstart:{seed}:{i}")
        alternatives = sorted({facts[j].object for j in members} - {fact.object})
        if not alternatives:
            raise ValueError(f"quickstart relation {fact.relation!r} has a single object; "
                             f"no counterfactual can be drawn for {fact.subject!r}")
        target_new = rng.choice(alternatives)
        same = [j for j in members if j != i and facts[j].object == fact.object]
        other = [j for j in members if facts[j].object not in (fact.object, target_new)]
        rng.shuffle(same)
        rng.shuffle(other)
        picks = (same + other)[:N_NEIGHBOURS]
        if len(picks) < N_NEIGHBOURS:
            raise ValueError(f"quickstart relation {fact.relation!r}: only {len(picks)} neighbours for "
                             f"{fact.subject!r}, need {N_NEIGHBOURS}")
        rec = {
            "case_id": i,
            "subject": fact.subject,
            "prompt": rel.prompt,
            "target_new": target_new,
            "target_true": fact.object,
            "relation": fact.relation,
            "paraphrase_prompts": [t.format(fact.subject) for t in rel.paraphrases],
            "neighborhood": [{"prompt": rel.prompt.format(facts[j].subject), "target": facts[j].object}
                             for j in picks],
            "generation_prompts": [t.format(fact.subject) for t in rel.generation],
        }
        records.append(validate_record(rec, TABLE, i))
    return records


def source_specs(spec: dict) -> list[dict]:
    """No data file: the table ships with the package."""
    return []


def prepare(spec: dict, mirror_dir: str | None, download_dir: str) -> tuple[list[dict], list[dict]]:
    """Registry entry: the table ships with the package, so no mirror or download is involved."""
    seed = spec.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"quickstart spec: 'seed' must be an int, got {seed!r}")
    path = table_path()
    prov = {"path": f"massedit/datasets/{TABLE}", "origin": "package", "url": None,
            "sha256": sha256_file(path), "bytes": path.stat().st_size}
    return build_records(seed), [prov]
