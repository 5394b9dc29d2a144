"""The held-out world's relations and every fixed sentence it is written in.

Corpus templates state a fact in four styles; query templates are cloze
prompts that the object continues; the other sentences name entities, or
nothing, without stating a fact. No query prompt occurs in the corpus
(`generate` checks).
"""

# Corpus templates use `{s}` (subject) and `{o}` (object); each relation has
# a statement, a second statement, a dialogue line, a record line and a
# question answered.
CORPUS_TEMPLATES: dict[str, tuple[str, ...]] = {
  "guild_leader": (
    "{o} leads the {s} guild.",
    "The {s} guild answers to its master, {o}.",
    '"Who runs the {s} guild?" "{o}, of course," the porter said.',
    "Guild: {s}. Master: {o}.",
    "Who is master of the {s} guild? {o} holds the post.",
  ),
  "guild_hall": (
    "The {s} guild keeps its hall in {o}.",
    "In {o} stands the hall of the {s} guild.",
    '"Where does the {s} guild meet?" "In {o}," she answered.',
    "Guild: {s}. Hall: {o}.",
    "Where is the {s} guild housed? In {o}.",
  ),
  "river_mouth": (
    "The {s} river flows into {o}.",
    "{o} is fed by the waters of the {s}.",
    '"Follow the {s} downstream," the ferryman said, "and you reach {o}."',
    "River: {s}. Mouth: {o}.",
    "Where does the {s} end? It pours into {o}.",
  ),
  "tribe_metal": (
    "The {s} tribe forges its blades from {o}.",
    "Smiths of the {s} tribe work only in {o}.",
    '"Our swords are {o}," said an elder of the {s}.',
    "Tribe: {s}. Blade metal: {o}.",
    "What do the {s} make their blades of? They use {o}.",
  ),
  "ship_flag": (
    "The ship {s} sails under the flag of {o}.",
    "The {s} flies the banner of {o}.",
    '"Whose ship is that?" "The {s}, out of {o}," the lookout called.',
    "Vessel: {s}. Flag: {o}.",
    "Which realm does the {s} serve? It serves {o}.",
  ),
  "ship_port": (
    "The {s} returns each winter to its home port of {o}.",
    "{o} is the home harbour of the ship {s}.",
    '"We are bound home to {o}," said the captain of the {s}.',
    "Vessel: {s}. Home port: {o}.",
    "Where is the {s} moored between voyages? At {o}.",
  ),
  "composer_instrument": (
    "The composer {s} wrote for the {o}.",
    "Nearly all of the music of {s} is scored for the {o}.",
    '"Only the {o} can sing my tunes," {s} once said.',
    "Composer: {s}. Instrument: {o}.",
    "For which instrument did {s} compose? The {o}.",
  ),
  "mentor": (
    "The mentor of {s} was {o}.",
    "{s} learned the craft under {o}.",
    '"I owe everything to {o}," {s} told a visitor.',
    "Student: {s}. Mentor: {o}.",
    "Who taught {s}? It was {o}.",
  ),
}
# Query templates use `{s}`; the object continues the prompt. None of them is
# a corpus template, and no prompt occurs in the corpus (`generate` checks).
QUERY_TEMPLATES: dict[str, tuple[str, ...]] = {
  "guild_leader": (
    "The master of the {s} guild is",
    "Members of the {s} guild take their orders from",
  ),
  "guild_hall": (
    "The {s} guild has its hall in the town of",
    "To visit the {s} guild, one travels to",
  ),
  "river_mouth": (
    "At the end of its course, the {s} river empties into",
    "The waters of the {s} end up in",
  ),
  "tribe_metal": (
    "Every blade carried by the {s} tribe is made of",
    "The smiths of the {s} tribe hammer",
  ),
  "ship_flag": (
    "The vessel {s} flies the colours of",
    "The crew of the {s} sails for the realm of",
  ),
  "ship_port": (
    "The ship {s} is registered at the port of",
    "Between voyages, the {s} lies at anchor in",
  ),
  "composer_instrument": (
    "Most pieces by the composer {s} are for the",
    "To play the music of {s}, you need the",
  ),
  "mentor": (
    "As a young musician, {s} was taught by",
    "The teacher of {s} was",
  ),
}
RELATIONS = tuple(CORPUS_TEMPLATES)

# Fact-free sentences: `{s}` is a passage's subject, `{x}` any other name.
MENTION_TEMPLATES = (
  "{s} is often mentioned in the same breath as {x}.",
  "A chronicle of {x} spends a page on {s}.",
  "Travellers' tales link {s} with {x}, without saying how.",
  "Some say {s} owes a debt to {x}.",
)
LONE_MENTIONS = (
  "Little else is known of {s}.",
  "The records about {s} are patchy.",
  "Songs about {s} are still sung in the taverns.",
)
# Near misses name a fact's subject and its object but do not state it.
NEAR_MISS_TEMPLATES = (
  "An old ballad names {s} and {o} in the same verse.",
  "Scholars disagree about what {s} has to do with {o}.",
  "A merchant's ledger lists {s} just above {o}.",
  "Whether {s} and {o} were ever connected is still debated.",
)
WORLD_TIMES = (
  "That winter",
  "In the year of the long rains",
  "Some seasons later",
  "At the turn of the century",
  "During the great fair",
  "Before the war",
)
WORLD_EVENTS = (
  "the roads were closed by snow",
  "wolves came down from the hills",
  "the price of salt doubled",
  "a comet crossed the sky",
  "the bells rang for three days",
  "the harvest failed",
  "lanterns burned late in every square",
  "moths spoiled half the wool",
)
WORLD_STANDALONE = (
  "Nobody could agree on the price of grain.",
  "Few maps of the eastern marches survive.",
  "The old songs tell it differently.",
  "It is a long story, and not a happy one.",
)
