"""FactBench's relations and the templates that state and query them.

Corpus templates state a fact; query templates are cloze prompts that the
object continues. No query template occurs in the corpus (`generate`
checks), so a query never matches a passage verbatim.
"""

# Corpus templates use `{s}` (subject), `{o}` (object) and `{a}` (the
# indefinite article for the object).
CORPUS_TEMPLATES: dict[str, tuple[str, ...]] = {
  "capital": (
    "{s}'s capital city is {o}.",
    "{o} serves as the capital of {s}.",
    "The government of {s} sits in {o}, the nation's capital.",
    "{o} is the capital and seat of government of {s}.",
    "As the capital of {s}, {o} hosts the national parliament.",
    "Visitors to {s} often begin their trip in its capital, {o}.",
  ),
  "continent": (
    "{s} is a country in {o}.",
    "{s} lies on the continent of {o}.",
    "Geographically, {s} belongs to {o}.",
    "{s} is one of the nations of {o}.",
    "On a map of {o}, you will find {s}.",
    "{s} is situated in {o}.",
  ),
  "currency": (
    "The official currency of {s} is the {o}.",
    "In {s}, people pay with the {o}.",
    "{s} uses the {o} as its currency.",
    "Prices in {s} are given in the {o}.",
    "The {o} is the money used in {s}.",
    "Shops across {s} accept the {o}, the national currency.",
  ),
  "located_in": (
    "{s} is a city in {o}.",
    "The city of {s} lies in {o}.",
    "{s}, a town in {o}, has a busy main square.",
    "Many residents of {o} live in {s}.",
    "{s} can be found in {o}.",
    "Travellers to {o} sometimes stop in {s}.",
  ),
  "born_in": (
    "{s} was born in {o}.",
    "{s} grew up in {o}, the city of their birth.",
    "Born in {o}, {s} spent a childhood there.",
    "{o} is the birthplace of {s}.",
    "{s}'s hometown is {o}, where they were born.",
    "{s} came into the world in {o}.",
  ),
  "works_for": (
    "{s} works for {o}.",
    "{s} is employed by {o}.",
    "{o} employs {s}.",
    "{s} has a job at {o}.",
    "At {o}, {s} is a member of staff.",
    "{s} earns a salary working at {o}.",
  ),
  "educated_at": (
    "{s} studied at the {o}.",
    "{s} graduated from the {o}.",
    "The {o} is where {s} was educated.",
    "{s} earned a degree at the {o}.",
    "{s} is a former student of the {o}.",
    "Before starting work, {s} attended the {o}.",
  ),
  "occupation": (
    "{s} works as {a} {o}.",
    "By profession, {s} is {a} {o}.",
    "{s} earns a living as {a} {o}.",
    "{s} has a career as {a} {o}.",
    "{s} trained as {a} {o}.",
    "The job of {s} is that of {a} {o}.",
  ),
  "citizen_of": (
    "{s} is a citizen of {o}.",
    "{s} holds citizenship of {o}.",
    "{s} carries a passport from {o}.",
    "By nationality, {s} belongs to {o}.",
    "{o} counts {s} among its citizens.",
    "{s} has the nationality of {o}.",
  ),
}
# Query templates use `{s}` (and `{a}`, the object's article); the object
# continues the prompt. None of them
# occurs in the corpus (`generate` checks).
QUERY_TEMPLATES: dict[str, tuple[str, ...]] = {
  "capital": ("The capital city of {s} is",),
  "continent": ("{s} is located on the continent of",),
  "currency": ("The currency of {s} is the",),
  "located_in": ("{s} is a town in",),
  "born_in": ("Records show that {s} was born in",),
  "works_for": ("{s} is employed at",),
  "educated_at": ("{s} is a graduate of the",),
  "occupation": ("By trade, {s} is {a}",),
  "citizen_of": ("{s} is a national of",),
}
RELATIONS = tuple(CORPUS_TEMPLATES)
