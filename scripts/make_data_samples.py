#!/usr/bin/env python3
"""Write the small sample data sets under data/: one file per input format distill reads.

Everything is generated here from templates and short word lists (no copied text), over one
seeded made-up world (towns, rivers, animals, inventions), so a fact stated in one file agrees
with the same fact anywhere else, and every arithmetic or conversion answer is computed.

  data/sample.txt                    plain text, documents separated by a blank line
  data/sample.jsonl                  {"text": ...}, other documents than sample.txt
  data/text.parquet                  the documents of sample.jsonl, one `text` column (zstd)
  data/chat.jsonl                    {"messages": [{"role", "content"}, ...]} (TRL conversational)
  data/chat.parquet                  the same conversations: `id` int64, `messages` (snappy)
  data/prompt_completion.jsonl       {"prompt": str, "completion": str}
  data/prompt_completion_chat.jsonl  {"prompt": [user message], "completion": [assistant message]}
  data/README.md                     what each file is

Deterministic: the same pyarrow version writes byte-identical files on every run.
usage: python3 scripts/make_data_samples.py [--out DIR]   (needs pyarrow for the Parquet files)
"""
import argparse
import hashlib
import json
import os
import random
import sys

import pyarrow as pa
import pyarrow.parquet as pq

SEED = 20240611
N_TEXT_DOCS = 300  # per file: sample.txt and sample.jsonl
N_CHATS = 400
N_PC = 200
N_PC_CHAT = 100

# ----------------------------------------------------------------------------- word lists

TOWN_HEADS = [
    "Alder", "Brenn", "Corvel", "Dravin", "Eskel", "Farrow", "Gildon", "Harrow", "Istel",
    "Jorvan", "Kessel", "Lunder", "Morrow", "Nettle", "Orvel", "Pellin", "Quarrel", "Rushen",
    "Sorrel", "Tindal", "Umber", "Varro", "Wrenna", "Yarrow", "Zephel", "Brask", "Callow",
    "Dunmar", "Elsmer", "Fennick",
]
TOWN_TAILS = [
    "ford", "mere", "wick", "stead", "haven", "dale", "holm", "bury", "cliff", "moor",
    "brook", "ton", "field", "gate",
]
RIVERS = [
    "Tamsel", "Orrin", "Velda", "Kestrin", "Ambrel", "Silvane", "Drumel", "Lowenna", "Brisel",
    "Corran", "Fenwyn", "Harlow", "Iscara", "Marrel", "Nessaly", "Pelder", "Rhedan", "Sallow",
    "Tevrin", "Ulden", "Wendle", "Yselle", "Arvon", "Bellin", "Caddor", "Dovrel", "Elvary",
    "Gantry", "Hollin", "Loske",
]
HILLS = [
    "Garrow Hills", "Peleth Downs", "Marrin Heights", "Skellow Fells", "Ondar Ridge",
    "Brackle Hills", "Tarren Moors", "Velloch Peaks",
]
SEAS = ["the Gray Sea", "the Sea of Orth", "Lake Venmere", "Marrow Bay", "the Gulf of Sennet", "Lake Istow"]
TRADES = [
    "weaver", "potter", "miller", "fisher", "tanner", "smith", "carpenter", "brewer",
    "salt trader", "stonemason", "rope maker", "shepherd",
]
FOUND_REASONS = [
    "wanted a safe crossing over the river",
    "came to work the clay pits nearby",
    "built mills on the fast water",
    "traded wool with the coast",
    "found good grazing on the flat meadows",
    "needed a harbor for their boats",
    "settled near a spring of clear water",
    "cut timber from the forests upstream",
]
PRODUCTS = [
    "blue pottery", "smoked cheese", "woolen blankets", "honey cakes", "copper pans",
    "willow baskets", "pear cider", "river pearls", "painted tiles", "rye bread",
    "leather boots", "glass beads", "linen shirts", "oak barrels", "plum jam",
]
MONTHS = [
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
FESTIVALS = [
    ("Lantern Walk", "families carry paper lanterns along the riverbank after dark"),
    ("Harvest Fair", "farmers bring their largest pumpkins to be weighed in the square"),
    ("Boat Race", "crews from nearby villages row against each other on the river"),
    ("Kite Day", "children fly homemade kites from the hill above the town"),
    ("Bell Festival", "the church bells ring for an hour at noon"),
    ("Apple Feast", "bakers compete to make the best apple pie"),
    ("Song Night", "choirs sing in the market hall until midnight"),
    ("Wool Market", "shepherds sell fleeces and show their best sheep"),
    ("Bridge Supper", "long tables are set out on the old bridge for a shared meal"),
    ("Candle Fair", "candle makers sell their wares by the light of a bonfire"),
]
DIRECTIONS = [("north", "south"), ("south", "north"), ("east", "west"), ("west", "east")]
FIRST_NAMES = [
    ("Ada", "she"), ("Bram", "he"), ("Clara", "she"), ("Dorian", "he"), ("Edith", "she"),
    ("Felix", "he"), ("Greta", "she"), ("Hugo", "he"), ("Iris", "she"), ("Jonas", "he"),
    ("Kaya", "she"), ("Leon", "he"), ("Mara", "she"), ("Niko", "he"), ("Olive", "she"),
    ("Pavel", "he"), ("Rosa", "she"), ("Silas", "he"), ("Tessa", "she"), ("Viktor", "he"),
    ("Wren", "she"), ("Yusuf", "he"), ("Zora", "she"), ("Anton", "he"), ("Bella", "she"),
    ("Caspar", "he"), ("Delia", "she"), ("Emil", "he"), ("Fiona", "she"), ("Gideon", "he"),
    ("Hana", "she"), ("Ivo", "he"), ("Lena", "she"), ("Marco", "he"), ("Nora", "she"),
    ("Oskar", "he"), ("Petra", "she"), ("Rafael", "he"), ("Sina", "she"), ("Tomas", "he"),
]
SURNAMES = [
    "Ferrow", "Halden", "Quist", "Marbury", "Tolland", "Vesk", "Orrick", "Pennel", "Ashby",
    "Crane", "Dallow", "Everly", "Grisham", "Hollis", "Jessop", "Kettering", "Lorne", "Mabry",
    "Norcott", "Pryor", "Rendell", "Sallis", "Thorne", "Upwood", "Varley", "Whitlow",
]
NATURALIST_ROLES = ["naturalist", "schoolteacher", "doctor", "beekeeper", "surveyor", "painter"]

ANIMAL_COLORS = [
    "copper", "slate", "amber", "ash", "ember", "frost", "moss", "pearl", "rust", "sable",
    "saffron", "smoke", "umber", "violet", "ivory", "olive",
]
ANIMAL_PARTS = ["tailed", "winged", "backed", "eared", "crested", "throated", "spotted", "banded"]
# kind, class, length range cm, weight range g, lifespan range years, young word, young range
ANIMAL_KINDS = [
    ("vole", "rodent", (8, 14), (20, 60), (1, 3), "litter", (3, 7)),
    ("shrew", "small mammal", (5, 9), (6, 18), (1, 2), "litter", (4, 8)),
    ("finch", "songbird", (11, 16), (14, 30), (3, 7), "clutch", (3, 6)),
    ("heron", "wading bird", (60, 95), (900, 2100), (10, 20), "clutch", (2, 5)),
    ("newt", "amphibian", (7, 15), (4, 12), (6, 14), "clutch", (80, 250)),
    ("toad", "amphibian", (6, 12), (25, 90), (5, 12), "clutch", (900, 3000)),
    ("beetle", "insect", (1, 4), (1, 3), (1, 2), "clutch", (20, 60)),
    ("moth", "insect", (2, 5), (1, 2), (1, 1), "clutch", (100, 400)),
    ("hare", "mammal", (45, 65), (2500, 4500), (4, 9), "litter", (2, 4)),
    ("trout", "freshwater fish", (25, 55), (300, 1800), (5, 10), "brood", (400, 1500)),
    ("lizard", "reptile", (12, 22), (10, 40), (4, 8), "clutch", (4, 10)),
    ("owl", "bird of prey", (30, 42), (250, 550), (8, 15), "clutch", (2, 4)),
]
HABITATS = {
    "water": ["the gravel shallows of the River {river}", "the cold pools of the River {river}"],
    "wet": ["the reed beds along the River {river}", "the wet meadows beside the River {river}"],
    "land": ["the stony slopes of the {hills}", "the old oak woods below the {hills}",
             "the heather on the high ground of the {hills}", "the wet meadows beside the River {river}"],
}
HABITAT_OF = {"trout": "water", "heron": "wet", "newt": "wet", "toad": "wet"}
DIETS = {
    "rodent": ["seeds and roots", "grass stems and berries", "nuts and bark"],
    "small mammal": ["worms and beetles", "snails and grubs", "spiders and small insects"],
    "songbird": ["thistle seeds", "small seeds and insects", "berries and buds"],
    "wading bird": ["small fish and frogs", "fish and water snails", "eels and tadpoles"],
    "amphibian": ["insects and worms", "slugs and small beetles", "water fleas and larvae"],
    "insect": ["rotting leaves", "pollen and nectar", "the sap of young trees"],
    "mammal": ["grass and clover", "herbs and young shoots", "bark in the winter months"],
    "freshwater fish": ["mayflies and shrimp", "insect larvae and small fish", "snails and worms"],
    "reptile": ["crickets and spiders", "ants and small beetles", "flies and moths"],
    "bird of prey": ["mice and voles", "small birds and beetles", "frogs and mice"],
}
ACTIVE = ["mostly at night", "mostly at dawn and dusk", "during the day", "on warm afternoons"]

DEVICES = [
    ("lamp", "light rooms for longer on a single filling of oil"),
    ("clock", "keep time for the mills without winding more than once a week"),
    ("loom", "weave two narrow cloths at once"),
    ("pump", "lift water from deep wells with less effort"),
    ("plough", "turn heavy clay soil with a single horse"),
    ("kettle", "boil water quickly over a small fire"),
    ("scale", "weigh grain to the nearest gram"),
    ("lock", "close canal gates without a second keeper"),
    ("sieve", "sort river gravel by size"),
    ("press", "squeeze juice from apples and pears"),
    ("compass", "find north inside iron ships"),
    ("stove", "heat a house with half the usual wood"),
    ("cart", "carry heavy loads over muddy roads"),
    ("bellows", "keep a forge hot with a foot pedal"),
    ("lantern", "stay lit in strong wind"),
]
DEVICE_WORDS = [
    "spindle", "tide", "wind", "spring", "ratchet", "double", "folding", "ember", "bell",
    "river", "copper", "lever", "twin", "drum", "reed",
]
MATERIALS = ["brass", "oak", "iron", "copper", "ash wood", "tin", "pewter", "beech wood"]

ITEMS = [
    ("apple", "apples"), ("pencil", "pencils"), ("marble", "marbles"), ("sticker", "stickers"),
    ("egg", "eggs"), ("book", "books"), ("card", "cards"), ("shell", "shells"),
    ("button", "buttons"), ("cookie", "cookies"), ("stamp", "stamps"), ("plum", "plums"),
    ("candle", "candles"), ("ribbon", "ribbons"), ("bean", "beans"), ("pear", "pears"),
]
CONTAINERS = [("box", "boxes"), ("bag", "bags"), ("basket", "baskets"), ("jar", "jars"),
              ("crate", "crates"), ("tray", "trays")]
SHOP_ITEMS = [("notebook", "notebooks"), ("loaf of bread", "loaves of bread"),
              ("ball", "balls"), ("cup", "cups"), ("toy boat", "toy boats"),
              ("sandwich", "sandwiches"), ("pen", "pens"), ("bowl", "bowls"),
              ("flower pot", "flower pots"), ("kite", "kites")]

# (big unit, big plural, small unit, small plural, factor, kind of measure, things measured)
CONVERSIONS = [
    ("meter", "meters", "centimeter", "centimeters", 100, "long", ["rope", "ribbon", "plank", "fence"]),
    ("kilometer", "kilometers", "meter", "meters", 1000, "long", ["walk", "race", "road", "trail"]),
    ("kilogram", "kilograms", "gram", "grams", 1000, "weight", ["bag of flour", "melon", "parcel", "sack of rice"]),
    ("liter", "liters", "milliliter", "milliliters", 1000, "volume", ["jug", "bucket", "water tank", "soup pot"]),
    ("hour", "hours", "minute", "minutes", 60, "time", ["film", "train ride", "football match", "concert"]),
    ("minute", "minutes", "second", "seconds", 60, "time", ["song", "race", "phone call", "speech"]),
    ("day", "days", "hour", "hours", 24, "time", ["trip", "storm", "holiday", "festival"]),
    ("week", "weeks", "day", "days", 7, "time", ["holiday", "course", "camp", "journey"]),
    ("foot", "feet", "inch", "inches", 12, "long", ["shelf", "board", "pole", "table"]),
    ("yard", "yards", "foot", "feet", 3, "long", ["garden path", "carpet", "hedge", "roll of cloth"]),
    ("pound", "pounds", "ounce", "ounces", 16, "weight", ["bag of sugar", "block of cheese", "box of nails", "ham"]),
    ("dozen", "dozen", "item", "items", 12, "count", ["eggs", "rolls", "roses", "pencils"]),
]


def measure(thing, kind, amount):
    """'A rope is 4 meters long.' / 'A melon weighs 3 kilograms.'"""
    if kind == "long":
        return f"{cap(a_an(thing))} is {amount} long."
    if kind == "weight":
        return f"{cap(a_an(thing))} weighs {amount}."
    if kind == "volume":
        return f"{cap(a_an(thing))} holds {amount}."
    return f"{cap(a_an(thing))} lasts {amount}."


# word, part of speech, definition (written for this file), example sentence
WORDS = [
    ("harbor", "noun", "a sheltered stretch of water where ships can stay safely", "The fishing boats returned to the harbor before the storm."),
    ("gentle", "adjective", "kind and calm, and careful not to hurt anyone", "She was gentle with the newborn lamb."),
    ("borrow", "verb", "to take something for a short time and promise to give it back", "May I borrow your umbrella until Friday?"),
    ("meadow", "noun", "a field of grass and wild flowers", "Cows grazed in the meadow by the stream."),
    ("whisper", "verb", "to speak very softly, using breath instead of full voice", "The children whisper during the film."),
    ("ancient", "adjective", "very old, from a time long ago", "The ancient wall was built from rough stones."),
    ("journey", "noun", "a trip from one place to another, often a long one", "The journey across the hills took three days."),
    ("puzzle", "noun", "a game or problem that makes you think hard to solve it", "He finished the puzzle before lunch."),
    ("brave", "adjective", "willing to face danger or pain without running away", "The brave swimmer pulled the boy from the lake."),
    ("lantern", "noun", "a lamp with a case around the flame so it can be carried", "We lit a lantern to find the path."),
    ("gather", "verb", "to bring things or people together into one place", "Let us gather sticks for the fire."),
    ("shallow", "adjective", "not deep", "The children paddled in the shallow water."),
    ("orchard", "noun", "a piece of land where fruit trees are grown", "The orchard was full of ripe pears."),
    ("polite", "adjective", "having good manners and showing respect to others", "It is polite to say thank you."),
    ("scatter", "verb", "to throw or spread things over a wide area", "Farmers scatter seed across the field."),
    ("blanket", "noun", "a large piece of warm cloth used as a cover on a bed", "She pulled the blanket up to her chin."),
    ("curious", "adjective", "eager to know or learn about something", "The curious cat looked into the box."),
    ("wander", "verb", "to walk slowly without a fixed plan or goal", "We like to wander through the old town."),
    ("pebble", "noun", "a small smooth stone", "He skipped a pebble across the pond."),
    ("nimble", "adjective", "quick and light in movement", "The nimble goat climbed the rocks."),
    ("cellar", "noun", "a room under a house, often used for storage", "Apples were kept in the cool cellar."),
    ("forecast", "noun", "a statement about what is likely to happen, especially with the weather", "The forecast says it will rain tomorrow."),
    ("mend", "verb", "to repair something that is broken or torn", "Grandmother will mend the hole in my sock."),
    ("timid", "adjective", "shy and easily frightened", "The timid deer ran into the trees."),
    ("bridge", "noun", "a structure that carries a road or path over a river or valley", "They walked across the bridge to the market."),
    ("sturdy", "adjective", "strong and not easily broken", "He built a sturdy table from oak."),
    ("glimpse", "noun", "a quick look at something", "We caught a glimpse of the fox."),
    ("hollow", "adjective", "empty inside", "The owl lived in a hollow tree."),
    ("kindle", "verb", "to light a fire or make it start to burn", "Use dry grass to kindle the fire."),
    ("valley", "noun", "a low area of land between hills, often with a river", "A river runs through the valley."),
    ("swift", "adjective", "moving very fast", "The swift horse won the race."),
    ("thimble", "noun", "a small cap worn on a finger to push a needle when sewing", "She wore a thimble while sewing the quilt."),
    ("ponder", "verb", "to think carefully about something for a long time", "He paused to ponder the question."),
    ("weary", "adjective", "very tired", "The weary walkers sat down to rest."),
    ("compass", "noun", "a tool with a needle that points north", "The sailor checked his compass."),
    ("rumble", "verb", "to make a long, deep, rolling sound", "Thunder began to rumble in the distance."),
    ("vivid", "adjective", "very bright and strong in color", "The garden was full of vivid flowers."),
    ("ladder", "noun", "a set of steps fixed between two long poles, used for climbing", "He climbed the ladder to reach the roof."),
    ("drift", "verb", "to be carried slowly by wind or water", "The leaves drift down the stream."),
    ("fragile", "adjective", "easily broken or damaged", "Pack the fragile cups with paper."),
    ("parcel", "noun", "something wrapped in paper so it can be sent or carried", "A parcel arrived at the door."),
    ("clever", "adjective", "quick to learn and understand", "The clever girl solved the riddle."),
    ("stroll", "verb", "to walk in a slow, relaxed way", "They stroll along the beach each evening."),
    ("kettle", "noun", "a metal pot with a spout, used for boiling water", "Put the kettle on for tea."),
    ("humble", "adjective", "not proud, and not thinking you are better than others", "The humble champion thanked her team."),
    ("gallop", "verb", "to run at the fastest pace, like a horse", "The horses gallop across the field."),
    ("pantry", "noun", "a small room or cupboard where food is kept", "The pantry shelves were full of jars."),
    ("eager", "adjective", "wanting very much to do or have something", "The eager pupils raised their hands."),
    ("shiver", "verb", "to shake slightly because of cold or fear", "We shiver at the bus stop in winter."),
    ("canyon", "noun", "a deep valley with steep rocky sides", "A river cut the canyon over many years."),
    ("tidy", "adjective", "neat and arranged in good order", "Keep your desk tidy."),
    ("nibble", "verb", "to eat something with small, quick bites", "The rabbit likes to nibble clover."),
    ("festival", "noun", "a special time of celebration, often with music and food", "The town holds a festival every summer."),
    ("rugged", "adjective", "rough and uneven", "The rugged coast was hard to walk along."),
    ("beacon", "noun", "a light or fire used as a signal or guide", "The beacon on the hill warned the ships."),
    ("tremble", "verb", "to shake because of fear, cold or excitement", "His hands began to tremble before the speech."),
    ("spacious", "adjective", "having plenty of room", "The new kitchen is bright and spacious."),
    ("burrow", "noun", "a hole in the ground dug by an animal as a home", "The rabbit hid in its burrow."),
    ("linger", "verb", "to stay somewhere longer than needed", "Guests often linger after dinner."),
    ("patient", "adjective", "able to wait calmly without getting annoyed", "Be patient while the bread rises."),
]

# title, minutes needed, four one-sentence steps (written for this file)
HOWTOS = [
    ("plant a bean seed", 15, [
        "Fill a small pot with damp soil and press it down lightly.",
        "Push the seed into the soil about two centimeters deep.",
        "Water it gently and set the pot on a sunny windowsill.",
        "Keep the soil moist, and a shoot should appear within a week or two."]),
    ("make a cup of tea", 6, [
        "Boil fresh water in a kettle.",
        "Put a tea bag in a cup and pour the hot water over it.",
        "Let it steep for three to five minutes, then take out the bag.",
        "Add milk or honey if you like, and stir before drinking."]),
    ("fold a paper boat", 10, [
        "Fold a sheet of paper in half from top to bottom.",
        "Fold the two top corners down to the middle to make a triangle.",
        "Turn up the bottom strips on both sides to form a hat shape.",
        "Open the hat from the bottom, flatten it into a square and pull the sides apart."]),
    ("wash your hands properly", 2, [
        "Wet your hands with clean running water.",
        "Rub them with soap for at least twenty seconds, including between the fingers.",
        "Rinse off all the soap under the water.",
        "Dry your hands with a clean towel."]),
    ("pack a lunch box", 10, [
        "Choose a main item such as a sandwich or a salad.",
        "Add a piece of fruit and a small snack.",
        "Put in a bottle of water so you stay hydrated.",
        "Close the lid tightly and keep the box somewhere cool."]),
    ("sew on a button", 12, [
        "Thread a needle and tie a knot at the end of the thread.",
        "Hold the button in place and push the needle up through one hole and down through another.",
        "Repeat this six or seven times so the button is held firmly.",
        "Finish with a few small stitches on the back of the cloth and cut the thread."]),
    ("clean a paintbrush", 5, [
        "Wipe the extra paint off the brush onto a rag.",
        "Rinse the brush in water, or in a cleaner made for oil paint.",
        "Rub a little soap into the bristles and rinse again until the water runs clear.",
        "Shape the bristles with your fingers and let the brush dry flat."]),
    ("build a simple bird feeder", 30, [
        "Tie a string around the top of a clean pine cone.",
        "Spread a thin layer of soft fat or peanut butter over the cone.",
        "Roll the cone in bird seed until it is well covered.",
        "Hang it from a branch where you can watch it from a window."]),
    ("make a paper chain", 15, [
        "Cut several sheets of colored paper into strips of the same size.",
        "Bend the first strip into a loop and glue the ends together.",
        "Thread the next strip through the loop and glue it into a second loop.",
        "Keep adding loops until the chain is as long as you want."]),
    ("water a house plant", 3, [
        "Touch the soil to check whether the top layer is dry.",
        "Pour water slowly around the base of the plant, not on the leaves.",
        "Stop when water begins to drain from the hole in the pot.",
        "Empty the saucer after a few minutes so the roots do not sit in water."]),
    ("tie a reef knot", 2, [
        "Take one end of the rope in each hand.",
        "Cross the left end over the right end and tuck it under.",
        "Now cross the right end over the left end and tuck it under.",
        "Pull both ends firmly, and the knot should lie flat and even."]),
    ("make a fruit salad", 15, [
        "Wash the fruit well under cold water.",
        "Peel and cut the fruit into pieces about the size of a grape.",
        "Mix the pieces in a large bowl with a squeeze of lemon juice.",
        "Chill the bowl for half an hour before serving."]),
    ("press a flower", 20, [
        "Pick a flower on a dry day, when there is no dew on the petals.",
        "Lay it flat between two sheets of plain paper.",
        "Put the paper inside a heavy book and stack more books on top.",
        "Leave it for two weeks, then lift it out carefully."]),
    ("set a table for dinner", 5, [
        "Place a plate in front of each chair.",
        "Put the fork on the left of the plate and the knife on the right, with the blade facing in.",
        "Set a glass just above the knife.",
        "Fold a napkin and lay it beside the fork or on the plate."]),
    ("check a bicycle tire", 5, [
        "Squeeze the tire with your thumb to feel whether it is firm.",
        "Look around the tire for cuts, stones or worn patches.",
        "Read the pressure printed on the side of the tire.",
        "Pump the tire up to that pressure and check it again with a gauge."]),
    ("start a compost heap", 40, [
        "Choose a shady corner of the garden with bare soil underneath.",
        "Lay down a layer of twigs so air can reach the bottom.",
        "Add green waste such as vegetable peel and brown waste such as dry leaves in turns.",
        "Turn the heap with a fork every few weeks to keep it breathing."]),
    ("make a simple kite", 45, [
        "Tie two thin sticks together in the shape of a cross.",
        "Run a string around the four ends to make a diamond frame.",
        "Glue paper or thin plastic over the frame and trim the edges.",
        "Attach a tail and a long flying line to the center of the cross."]),
    ("boil an egg", 12, [
        "Place the egg in a small pan and cover it with cold water.",
        "Bring the water to a boil over medium heat.",
        "Let it simmer for seven minutes for a firm yolk.",
        "Cool the egg in cold water before peeling it."]),
    ("plan a short walk", 10, [
        "Pick a route that matches how far you want to go.",
        "Check the weather and dress in layers.",
        "Pack water, a snack and a map of the area.",
        "Tell someone where you are going and when you expect to return."]),
    ("make lemonade", 10, [
        "Squeeze the juice from four lemons into a jug.",
        "Stir in a few spoonfuls of sugar until it dissolves.",
        "Add about a liter of cold water and stir again.",
        "Taste it, add more sugar or water if needed, and serve with ice."]),
]

SYSTEM_GENERAL = [
    "You are a helpful assistant. Answer clearly and briefly.",
    "You are a careful assistant. Keep every answer short and correct.",
    "You are a concise assistant. Keep explanations short.",
]
SYSTEM_TOPIC = {
    "math": ["You are a patient tutor who explains arithmetic step by step.",
             "You are a teacher for young students. Use simple words."],
    "words": ["You answer questions about words, spelling and meanings.",
              "You are a teacher for young students. Use simple words."],
    "world": ["You are a friendly guide to the towns, rivers and wildlife of the region.",
              "You know the local history of the towns and rivers of the region."],
    "howto": ["You help people with everyday tasks at home.",
              "You give practical advice in a few short steps."],
}

ORDINALS = ["First", "Second", "Third", "Fourth", "Fifth", "Sixth"]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                "ten", "eleven", "twelve"]


def cap(s):
    return s[0].upper() + s[1:]


def commas(n):
    return f"{n:,}"


def join_and(xs):
    return xs[0] if len(xs) == 1 else ", ".join(xs[:-1]) + " and " + xs[-1]


def a_an(word):
    return ("an " if word[0] in "aeiou" else "a ") + word


def plural(n, word):
    """'1 gram', '1,450 grams'."""
    return f"{commas(n)} {word}" + ("" if n == 1 else "s")


def spell(word):
    return "-".join(word)


def tenths(n10):
    """n10 / 10 as text: 45 -> '4.5', 40 -> '4'."""
    return str(n10 // 10) if n10 % 10 == 0 else f"{n10 // 10}.{n10 % 10}"


# ----------------------------------------------------------------------------- the world

def build_world(rng):
    world = {}
    names = [h + t for h in TOWN_HEADS for t in TOWN_TAILS]
    rng.shuffle(names)
    names = names[:120]
    rivers = []
    for i, r in enumerate(RIVERS):
        km = rng.randint(28, 340)
        rivers.append({
            "name": r, "km": km, "source": HILLS[i % len(HILLS)], "mouth": rng.choice(SEAS),
            "bridges": rng.randint(2, 19), "towns": [],
        })
    towns = []
    for i, t in enumerate(names):
        river = rivers[i % len(rivers)]
        founded = rng.randint(1320, 1820)
        pop = rng.choice([rng.randint(400, 1450), rng.randint(1600, 7800), rng.randint(8200, 46000)])
        census = rng.randint(max(founded + 40, 1850), 1960)
        pop0 = max(60, int(pop * rng.uniform(0.25, 0.8)))
        fest = rng.choice(FESTIVALS)
        town = {
            "name": t, "river": river["name"], "hills": rng.choice(HILLS),
            "bank": rng.choice(["north", "south", "east", "west"]), "founded": founded,
            "trade": rng.choice(TRADES), "reason": rng.choice(FOUND_REASONS), "pop": pop,
            "census": census, "pop0": pop0, "product": rng.choice(PRODUCTS),
            "market_day": rng.choice(DAYS), "festival": fest[0], "festival_what": fest[1],
            "festival_month": rng.choice(MONTHS), "arches": rng.randint(2, 9),
            "neighbor": None,
        }
        towns.append(town)
        river["towns"].append(t)
    by_name = {t["name"]: t for t in towns}
    # each town gets at most one stated neighbor relation, stated from one side only
    order = list(range(len(towns)))
    rng.shuffle(order)
    for a, b in zip(order[0::2], order[1::2]):
        d = rng.choice(DIRECTIONS)
        towns[a]["neighbor"] = (towns[b]["name"], rng.randint(4, 60), d[0])
    people = []
    used = set()
    while len(people) < 120:
        f = rng.choice(FIRST_NAMES)
        s = rng.choice(SURNAMES)
        if (f[0], s) in used:
            continue
        used.add((f[0], s))
        people.append({"first": f[0], "pron": f[1], "last": s})
    animals = []
    seen = set()
    while len(animals) < 60:
        c, p = rng.choice(ANIMAL_COLORS), rng.choice(ANIMAL_PARTS)
        kind = rng.choice(ANIMAL_KINDS)
        name = f"{c}-{p} {kind[0]}"
        if name in seen:
            continue
        seen.add(name)
        river = rng.choice(rivers)
        hills = rng.choice(HILLS)
        who = people[len(animals)]
        town = rng.choice(towns)
        animals.append({
            "name": name, "kind": kind[0], "class": kind[1],
            "cm": rng.randint(*kind[2]), "g": rng.randint(*kind[3]),
            "years": rng.randint(*kind[4]), "young_word": kind[5], "young": rng.randint(*kind[6]),
            "habitat": rng.choice(HABITATS[HABITAT_OF.get(kind[0], "land")]).format(river=river["name"], hills=hills),
            "diet": rng.choice(DIETS[kind[1]]), "active": rng.choice(ACTIVE),
            "described_by": who, "described_role": rng.choice(NATURALIST_ROLES),
            "described_town": town["name"],
            "described_year": rng.randint(max(town["founded"] + 30, 1760), 1990),
        })
    inventions = []
    seen = set()
    while len(inventions) < 60:
        w, dev = rng.choice(DEVICE_WORDS), rng.choice(DEVICES)
        name = f"{w} {dev[0]}"
        if name in seen:
            continue
        seen.add(name)
        town = rng.choice(towns)
        year = rng.randint(max(town["founded"] + 15, 1620), 1935)
        who = people[60 + len(inventions)]
        improver = people[len(inventions) * 2 % 60]
        inventions.append({
            "name": name, "device": dev[0], "purpose": dev[1], "town": town["name"],
            "year": year, "inventor": who, "trade": rng.choice(TRADES),
            "material": rng.choice(MATERIALS), "patent_gap": rng.randint(1, 6),
            "improved_gap": rng.randint(8, 60), "improver": improver,
            "towns_using": rng.randint(3, 40),
        })
    world.update(towns=towns, rivers=rivers, by_name=by_name, people=people, animals=animals,
                 inventions=inventions, river_by_name={r["name"]: r for r in rivers})
    return world


def full(p):
    return f"{p['first']} {p['last']}"


def size_word(pop):
    if pop < 1500:
        return "village"
    if pop < 8000:
        return "small town"
    return "market town"


# ----------------------------------------------------------------------------- documents

def town_doc(rng, w, t):
    sz = size_word(t["pop"])
    out = []
    intro = rng.choice([
        f"{t['name']} is {a_an(sz)} on the {t['bank']} bank of the River {t['river']}, below the {t['hills']}.",
        f"{t['name']} is {a_an(sz)} in the valley of the River {t['river']}, within sight of the {t['hills']}.",
        f"Lying on the {t['bank']} bank of the River {t['river']}, {t['name']} is {a_an(sz)} known for its {t['product']}.",
    ])
    out.append(intro)
    out.append(rng.choice([
        f"It was founded in {t['founded']} by {t['trade']}s who {t['reason']}.",
        f"The first settlers were {t['trade']}s who {t['reason']}, and the settlement dates from {t['founded']}.",
        f"Records show that {t['trade']}s settled here in {t['founded']} because they {t['reason']}.",
    ]))
    diff = t["pop"] - t["pop0"]
    out.append(rng.choice([
        f"At the last count it had {commas(t['pop'])} residents, up from {commas(t['pop0'])} in {t['census']}.",
        f"The population grew from {commas(t['pop0'])} in {t['census']} to {commas(t['pop'])} at the last count, an increase of {commas(diff)}.",
        f"About {commas(t['pop'])} people live there now, which is {commas(diff)} more than the {commas(t['pop0'])} counted in {t['census']}.",
    ]))
    extras = []
    if "known for" not in intro:
        extras.append(f"The {sz} is known for its {t['product']}, sold at a market held every {t['market_day']}.")
    else:
        extras.append(f"A market is held every {t['market_day']} in the main square.")
    extras.append(rng.choice([
        f"Every {t['festival_month']} it holds the {t['festival']}, when {t['festival_what']}.",
        f"The highlight of the year is the {t['festival']} in {t['festival_month']}, when {t['festival_what']}.",
    ]))
    extras.append(f"An old stone bridge with {NUMBER_WORDS[t['arches']]} arches crosses the river there.")
    if t["neighbor"]:
        n, d, dirn = t["neighbor"]
        extras.append(f"{t['name']} lies {d} kilometers {dirn} of {n}.")
    rest = out[1:] + extras
    keep = sorted(rng.sample(range(len(rest)), rng.choice([2, 2, 3])))
    text = " ".join([intro] + [rest[i] for i in keep])
    if rng.random() < 0.2:
        text = t["name"] + "\n" + text
    return text


def river_doc(rng, w, r):
    miles = round(r["km"] / 1.609344)
    towns = r["towns"][:]
    rng.shuffle(towns)
    shown = sorted(towns[: rng.randint(2, min(4, len(towns)))])
    out = [rng.choice([
        f"The River {r['name']} rises in the {r['source']} and flows into {r['mouth']}.",
        f"The River {r['name']} begins as a spring in the {r['source']} and ends in {r['mouth']}.",
    ])]
    out.append(rng.choice([
        f"It is {r['km']} kilometers long, or about {miles} miles.",
        f"Its length is {r['km']} kilometers, which is roughly {miles} miles.",
    ]))
    out.append(f"Towns along its banks include {join_and(shown)}.")
    out.append(rng.choice([
        f"The river is crossed by {r['bridges']} bridges.",
        f"There are {r['bridges']} bridges over it between the hills and the {'lake' if r['mouth'].startswith('Lake') else 'sea'}.",
    ]))
    if rng.random() < 0.6:
        out.append(rng.choice([
            "In spring the melting snow makes the water fast and muddy.",
            "Its upper reaches are shallow enough to wade across in late summer.",
            "Barges once carried timber and grain down to the mouth.",
            "Anglers come for the trout that feed in its cold pools.",
            "Willows line much of its lower course.",
        ]))
    return " ".join(out)


def animal_doc(rng, w, a):
    who = a["described_by"]
    out = [rng.choice([
        f"The {a['name']} is {a_an(a['class'])} found in {a['habitat']}.",
        f"The {a['name']} is {a_an(a['class'])} that lives in {a['habitat']}.",
    ])]
    out.append(f"Adults grow to about {plural(a['cm'], 'centimeter')} long and weigh around {plural(a['g'], 'gram')}.")
    out.append(rng.choice([
        f"It feeds on {a['diet']} and is active {a['active']}.",
        f"Active {a['active']}, it feeds on {a['diet']}.",
    ]))
    out.append(rng.choice([
        f"A typical {a['young_word']} has {commas(a['young'])} young, and individuals live for up to {a['years']} year{'s' if a['years'] > 1 else ''}.",
        f"It can live for {a['years']} year{'s' if a['years'] > 1 else ''}, and a {a['young_word']} usually numbers {commas(a['young'])}.",
    ]))
    out.append(rng.choice([
        f"It was first described in {a['described_year']} by {full(who)}, a {a['described_role']} from {a['described_town']}.",
        f"The first written description came from {full(who)}, a {a['described_role']} in {a['described_town']}, in {a['described_year']}.",
    ]))
    keep = sorted(rng.sample(range(1, len(out)), rng.choice([2, 2, 3])))
    return " ".join([out[0]] + [out[i] for i in keep])


def invention_doc(rng, w, v):
    who, imp = v["inventor"], v["improver"]
    pat = v["year"] + v["patent_gap"]
    impy = v["year"] + v["improved_gap"]
    out = [rng.choice([
        f"The {v['name']} is a device made to {v['purpose']}.",
        f"The {v['name']} was designed to {v['purpose']}.",
    ])]
    out.append(rng.choice([
        f"It was invented in {v['year']} by {full(who)}, a {v['trade']} from {v['town']}, who registered the design {v['patent_gap']} year{'s' if v['patent_gap'] > 1 else ''} later, in {pat}.",
        f"{full(who)}, a {v['trade']} in {v['town']}, built the first one in {v['year']} and registered the design in {pat}.",
    ]))
    out.append(f"The early models were made of {v['material']}.")
    out.append(rng.choice([
        f"In {impy}, {v['improved_gap']} years after the first model, {full(imp)} made it lighter and cheaper to build.",
        f"{full(imp)} improved the design in {impy}, {v['improved_gap']} years after it first appeared.",
    ]))
    out.append(f"Within a generation it was in use in {v['towns_using']} towns of the region.")
    keep = sorted(rng.sample(range(2, len(out)), rng.choice([1, 1, 2])))
    return " ".join(out[:2] + [out[i] for i in keep])


def compare_doc(rng, w):
    a, b = rng.sample(w["towns"], 2)
    if a["pop"] == b["pop"]:
        return None
    big, small = (a, b) if a["pop"] > b["pop"] else (b, a)
    diff = big["pop"] - small["pop"]
    out = [f"{big['name']} has {commas(big['pop'])} residents and {small['name']} has {commas(small['pop'])}, so {big['name']} is larger by {commas(diff)} people."]
    if big["founded"] != small["founded"]:
        old, young = (big, small) if big["founded"] < small["founded"] else (small, big)
        out.append(f"{old['name']} is the older of the two: it was founded in {old['founded']}, {young['founded'] - old['founded']} years before {young['name']}.")
    if big["river"] == small["river"]:
        out.append(f"Both stand on the River {big['river']}.")
    else:
        out.append(f"{big['name']} is on the River {big['river']}, while {small['name']} is on the River {small['river']}.")
    return " ".join(out)


# --- word problems: each returns (question, worked answer, short answer)

def problem(rng, w):
    kind = rng.choice(["add", "sub", "mul", "div", "rem", "money", "speed", "area", "time", "conv", "conv", "multi"])
    name, pron = rng.choice(FIRST_NAMES)
    Pron = cap(pron)
    poss = "her" if pron == "she" else "his"
    item, items = rng.choice(ITEMS)
    if kind == "add":
        a, b = rng.randint(3, 95), rng.randint(2, 60)
        q = rng.choice([
            f"{name} has {a} {items} and gets {b} more from a friend. How many {items} does {pron} have now?",
            f"A class collected {a} {items} on Monday and {b} on Tuesday. How many {items} did they collect in total?",
        ])
        ans = f"Add the two amounts: {a} plus {b} equals {a + b}. The answer is {a + b} {items}."
        return q, ans, str(a + b)
    if kind == "sub":
        a = rng.randint(20, 150)
        b = rng.randint(2, a - 1)
        friend = rng.choice(FIRST_NAMES)[0]
        q = f"{name} had {a} {items} and gave {b} of them to {friend}. How many {items} does {name} have left?"
        ans = f"Take away the ones given: {a} minus {b} equals {a - b}. {name} has {a - b} {items} left."
        return q, ans, str(a - b)
    if kind == "mul":
        c, cs = rng.choice(CONTAINERS)
        a, b = rng.randint(2, 12), rng.randint(3, 25)
        q = f"There are {a} {cs} with {b} {items} in each {c}. How many {items} are there altogether?"
        ans = f"Multiply the number of {cs} by the number in each: {a} times {b} equals {a * b}. There are {a * b} {items}."
        return q, ans, str(a * b)
    if kind == "div":
        a, b = rng.randint(2, 9), rng.randint(2, 15)
        q = f"{name} shares {a * b} {items} equally among {a} friends. How many {items} does each friend get?"
        ans = f"Divide the {items} by the number of friends: {a * b} divided by {a} equals {b}. Each friend gets {b} {items if b != 1 else item}."
        return q, ans, str(b)
    if kind == "rem":
        c, cs = rng.choice(CONTAINERS)
        k = rng.randint(3, 9)
        n = rng.randint(k + 1, 12 * k)
        if n % k == 0:
            n += 1
        qn, r = divmod(n, k)
        q = f"{name} packs {n} {items} into {cs} that hold {k} each. How many full {cs} can {pron} make, and how many {items} are left over?"
        ans = (f"{n} divided by {k} is {qn} with a remainder of {r}, because {qn} times {k} is {qn * k}. "
               f"{Pron} can fill {qn} {cs if qn != 1 else c} and will have {r} {items if r != 1 else item} left over.")
        return q, ans, f"{qn} full {cs if qn != 1 else c}, {r} left over"
    if kind == "money":
        s, ss = rng.choice(SHOP_ITEMS)
        a, p = rng.randint(2, 6), rng.randint(2, 9)
        bill = next(x for x in (10, 20, 50, 100) if x > a * p)
        q = f"{name} buys {a} {ss} for {p} dollars each and pays with a {bill}-dollar note. How much change does {pron} get?"
        ans = (f"The {ss} cost {a} times {p}, which is {a * p} dollars. "
               f"The change is {bill} minus {a * p}, which is {bill - a * p} dollars.")
        return q, ans, f"{bill - a * p} dollars"
    if kind == "speed":
        v, h = rng.choice([4, 5, 6, 12, 15, 18, 20, 40, 45, 60, 80]), rng.randint(2, 6)
        veh = {4: "walker", 5: "walker", 6: "hiker", 12: "cyclist", 15: "cyclist", 18: "cyclist",
               20: "ferry", 40: "bus", 45: "bus", 60: "train", 80: "train"}[v]
        q = f"A {veh} travels at a steady {v} kilometers per hour. How far does it go in {h} hours?"
        ans = f"Distance is speed times time: {v} times {h} equals {v * h}. The {veh} covers {v * h} kilometers."
        return q, ans, f"{v * h} kilometers"
    if kind == "area":
        a, b = rng.randint(3, 20), rng.randint(3, 30)
        thing = rng.choice(["garden", "room", "playground", "vegetable bed", "courtyard"])
        if rng.random() < 0.5:
            q = f"A rectangular {thing} is {a} meters wide and {b} meters long. What is its area?"
            ans = f"Area is width times length: {a} times {b} equals {a * b}. The {thing} has an area of {a * b} square meters."
            return q, ans, f"{a * b} square meters"
        q = f"A rectangular {thing} is {a} meters wide and {b} meters long. How long is the fence that goes all the way around it?"
        ans = f"The perimeter is two times the width plus the length: 2 times ({a} plus {b}) equals {2 * (a + b)}. The fence is {2 * (a + b)} meters long."
        return q, ans, f"{2 * (a + b)} meters"
    if kind == "time":
        t1, t2 = rng.sample(w["towns"], 2)
        hh, mm = rng.randint(6, 18), rng.choice(range(0, 60, 5))
        dur = rng.choice([25, 35, 40, 50, 55, 70, 85, 95, 110, 125])
        end = hh * 60 + mm + dur
        q = f"A coach leaves {t1['name']} at {hh}:{mm:02d} and the ride to {t2['name']} takes {dur} minutes. At what time does it arrive?"
        dh, dm = divmod(dur, 60)
        dur_s = (f"{dur} minutes is {dh} hour{'s' if dh > 1 else ''} and {dm} minutes. " if dh else "")
        ans = f"{dur_s}Adding {dur} minutes to {hh}:{mm:02d} gives {end // 60}:{end % 60:02d}. The coach arrives at {end // 60}:{end % 60:02d}."
        return q, ans, f"{end // 60}:{end % 60:02d}"
    if kind == "conv":
        big, bigs, small, smalls, f, mkind, things = rng.choice(CONVERSIONS)
        thing = rng.choice(things)
        if big == "dozen":
            n = rng.randint(2, 15)
            q = f"An order is for {n} dozen {thing}. How many {thing} is that?"
            ans = f"One dozen is 12, so {n} dozen is {n} times 12, which is {12 * n} {thing}."
            return q, ans, f"{12 * n} {thing}"
        if rng.random() < 0.5:
            if f in (100, 1000) and rng.random() < 0.5:
                n10 = rng.randint(11, 99)
                if n10 % 10 == 0:
                    n10 += 1
                val, res = tenths(n10), n10 * f // 10
            else:
                val = rng.randint(2, 12)
                res = val * f
            q = f"{measure(thing, mkind, f'{val} {bigs}')} How many {smalls} is that?"
            ans = f"One {big} is {commas(f)} {smalls}, so multiply {val} by {commas(f)}. The answer is {commas(res)} {smalls}."
            return q, ans, f"{commas(res)} {smalls}"
        n = rng.randint(2, 12)
        res = n * f
        q = f"{measure(thing, mkind, f'{commas(res)} {smalls}')} How many {bigs} is that?"
        ans = f"There are {commas(f)} {smalls} in one {big}, so divide {commas(res)} by {commas(f)}. The answer is {n} {bigs}."
        return q, ans, f"{n} {bigs}"
    # multi-step
    a, b, c = rng.randint(10, 60), rng.randint(5, 40), rng.randint(2, 9)
    c = min(c, a + b - 1)
    left = a + b - c
    q = (f"A shop had {a} {items} in the morning. A delivery brought {b} more, and then "
         f"{c} were sold. How many {items} does the shop have now?")
    ans = f"First add the delivery: {a} plus {b} is {a + b}. Then take away the sales: {a + b} minus {c} is {left}. The shop has {left} {items}."
    return q, ans, str(left)


def problem_doc(rng, w):
    q, ans, _ = problem(rng, w)
    style = rng.randrange(3)
    if style == 0:
        return f"Question: {q}\nAnswer: {ans}"
    if style == 1:
        return f"Word problem. {q} Solution: {ans}"
    return f"{q}\n{ans}"


def word_doc(rng, w, entry):
    word, pos, defn, ex = entry
    n_e = word.count("e")
    vowels = sum(word.count(v) for v in "aeiou")
    out = [rng.choice([
        f"The word \"{word}\" is {a_an(pos)} that means {defn}.",
        f"\"{cap(word)}\" is {a_an(pos)}. It means {defn}.",
        f"As {a_an(pos)}, \"{word}\" means {defn}.",
    ])]
    out.append(f"It has {NUMBER_WORDS[len(word)] if len(word) <= 12 else len(word)} letters and is spelled {spell(word)}.")
    out.append(rng.choice([
        f"Here is an example: {ex}",
        f"You might hear it used like this: {ex}",
        f"For example: {ex}",
    ]))
    if rng.random() < 0.5:
        out.append(f"{cap(NUMBER_WORDS[vowels])} of its letters {'are vowels' if vowels != 1 else 'is a vowel'} (a, e, i, o or u).")
    elif n_e:
        out.append(f"The letter e appears {NUMBER_WORDS[n_e]} time{'s' if n_e != 1 else ''} in it.")
    return " ".join(out)


def howto_doc(rng, w, h, numbered):
    title, minutes, steps = h
    head = rng.choice([f"How to {title}", f"How to {title} in {minutes} minutes",
                       f"A short guide: how to {title}"])
    if numbered:
        lines = [head + "."] + [f"{i + 1}. {s}" for i, s in enumerate(steps)]
        lines.append(f"The whole job takes about {minutes} minutes.")
        return "\n".join(lines)
    body = " ".join(f"{ORDINALS[i]}, {s[0].lower() + s[1:]}" for i, s in enumerate(steps))
    return f"{head}. {body} Allow about {minutes} minutes."


def make_documents(rng, w):
    docs = []
    for t in w["towns"]:
        docs.append(town_doc(rng, w, t))
    for r in w["rivers"]:
        docs.append(river_doc(rng, w, r))
    for a in w["animals"]:
        docs.append(animal_doc(rng, w, a))
    for v in w["inventions"]:
        docs.append(invention_doc(rng, w, v))
    for e in WORDS:
        docs.append(word_doc(rng, w, e))
    for i, h in enumerate(HOWTOS):
        docs.append(howto_doc(rng, w, h, numbered=i % 2 == 0))
    docs = unique(docs)
    while len(docs) < 2 * N_TEXT_DOCS:
        d = compare_doc(rng, w) if rng.random() < 0.4 else problem_doc(rng, w)
        if d:
            docs = unique(docs + [d])
    rng.shuffle(docs)
    return docs[:N_TEXT_DOCS], docs[N_TEXT_DOCS: 2 * N_TEXT_DOCS]


def unique(xs, key=lambda d: " ".join(d.lower().split())):
    seen, out = set(), []
    for x in xs:
        k = key(x)
        if k not in seen:
            seen.add(k)
            out.append(x)
    return out


# ----------------------------------------------------------------------------- conversations

def town_qas(rng, w, t):
    """Question/answer pairs about one town, in an order a conversation can follow."""
    sz = size_word(t["pop"])
    qas = [
        (rng.choice([f"Where is {t['name']}?", f"Can you tell me where {t['name']} is?"]),
         f"{t['name']} is {a_an(sz)} on the {t['bank']} bank of the River {t['river']}, below the {t['hills']}."),
        (rng.choice(["When was it founded?", "How old is the town?"]),
         f"It was founded in {t['founded']} by {t['trade']}s who {t['reason']}."),
        ("How many people live there?",
         f"At the last count it had {commas(t['pop'])} residents. In {t['census']} there were {commas(t['pop0'])}, so it has grown by {commas(t['pop'] - t['pop0'])}."),
        ("What is it known for?",
         f"It is known for its {t['product']}, which are sold at the market every {t['market_day']}."
         if t["product"].endswith("s") and not t["product"].endswith("ss") else
         f"It is known for its {t['product']}, which is sold at the market every {t['market_day']}."),
        ("Is there a festival?",
         f"Yes, the {t['festival']} takes place every {t['festival_month']}, when {t['festival_what']}."),
    ]
    if t["neighbor"]:
        n, d, dirn = t["neighbor"]
        qas.append((f"How far is it from {n}?", f"{t['name']} lies {d} kilometers {dirn} of {n}."))
    return qas


def entity_chat(rng, w):
    kind = rng.choice(["town", "town", "river", "animal", "invention"])
    if kind == "town":
        t = rng.choice(w["towns"])
        qas = town_qas(rng, w, t)
        first = qas[0]
        rest = qas[1:]
        rng.shuffle(rest)
        return [first] + rest
    if kind == "river":
        r = rng.choice(w["rivers"])
        miles = round(r["km"] / 1.609344)
        towns = sorted(rng.sample(r["towns"], min(3, len(r["towns"]))))
        return [
            (f"Where does the River {r['name']} flow?",
             f"The River {r['name']} rises in the {r['source']} and flows into {r['mouth']}."),
            ("How long is it?", f"It is {r['km']} kilometers long, which is about {miles} miles."),
            ("Which towns are on it?", f"Towns on its banks include {join_and(towns)}."),
            ("How many bridges cross it?", f"It is crossed by {r['bridges']} bridges."),
        ]
    if kind == "animal":
        a = rng.choice(w["animals"])
        who = a["described_by"]
        return [
            (rng.choice([f"What is the {a['name']}?", f"Tell me about the {a['name']}."]),
             f"The {a['name']} is {a_an(a['class'])} found in {a['habitat']}. It feeds on {a['diet']}."),
            ("How big does it get?",
             f"Adults are about {plural(a['cm'], 'centimeter')} long and weigh around {plural(a['g'], 'gram')}."),
            ("How long does it live?",
             f"It can live for up to {a['years']} year{'s' if a['years'] > 1 else ''}."),
            ("Who first described it?",
             f"{full(who)}, a {a['described_role']} from {a['described_town']}, described it in {a['described_year']}."),
        ]
    v = rng.choice(w["inventions"])
    who, imp = v["inventor"], v["improver"]
    return [
        (rng.choice([f"What is the {v['name']}?", f"What was the {v['name']} for?"]),
         f"The {v['name']} is a device made to {v['purpose']}."),
        ("Who invented it?",
         f"{full(who)}, a {v['trade']} from {v['town']}, invented it in {v['year']}."),
        ("What were the first ones made of?", f"The early models were made of {v['material']}."),
        ("When was it improved?",
         f"{full(imp)} improved it in {v['year'] + v['improved_gap']}, {v['improved_gap']} years after the first model."),
    ]


def entity_fact(rng, w):
    """One standalone question about the made-up world, with its answer."""
    kind = rng.choice(["town", "town", "river", "animal", "invention"])
    if kind == "town":
        t = rng.choice(w["towns"])
        facts = [
            (f"Where is {t['name']}?", town_qas(rng, w, t)[0][1]),
            (f"When was {t['name']} founded?", f"{t['name']} was founded in {t['founded']} by {t['trade']}s who {t['reason']}."),
            (f"How many people live in {t['name']}?", f"At the last count {t['name']} had {commas(t['pop'])} residents."),
            (f"What is {t['name']} known for?", f"{t['name']} is known for its {t['product']}."),
            (f"When is the {t['festival']} in {t['name']}?", f"It is held every {t['festival_month']}, when {t['festival_what']}."),
        ]
        if t["neighbor"]:
            n, d, dirn = t["neighbor"]
            facts.append((f"How far is {t['name']} from {n}?", f"{t['name']} lies {d} kilometers {dirn} of {n}."))
        return rng.choice(facts)
    if kind == "river":
        r = rng.choice(w["rivers"])
        miles = round(r["km"] / 1.609344)
        return rng.choice([
            (f"How long is the River {r['name']}?", f"The River {r['name']} is {r['km']} kilometers long, about {miles} miles."),
            (f"Where does the River {r['name']} end?", f"It flows into {r['mouth']}."),
            (f"Where does the River {r['name']} begin?", f"It rises in the {r['source']}."),
        ])
    if kind == "animal":
        a = rng.choice(w["animals"])
        return rng.choice([
            (f"What does the {a['name']} eat?", f"The {a['name']} feeds on {a['diet']}."),
            (f"Where does the {a['name']} live?", f"The {a['name']} lives in {a['habitat']}."),
            (f"How long can the {a['name']} live?", f"It can live for up to {a['years']} year{'s' if a['years'] > 1 else ''}."),
        ])
    v = rng.choice(w["inventions"])
    return rng.choice([
        (f"Who invented the {v['name']}?", f"{full(v['inventor'])}, a {v['trade']} from {v['town']}, invented it in {v['year']}."),
        (f"What is the {v['name']} used for?", f"It was made to {v['purpose']}."),
        (f"When was the {v['name']} improved?", f"{full(v['improver'])} improved it in {v['year'] + v['improved_gap']}."),
    ])


def math_chat(rng, w):
    """An arithmetic exchange with follow-ups whose answers build on the first."""
    name, pron = rng.choice(FIRST_NAMES)
    item, items = rng.choice(ITEMS)
    c, cs = rng.choice(CONTAINERS)
    a, b = rng.randint(2, 9), rng.randint(3, 15)
    total = a * b
    more = rng.randint(1, 4)
    eat = rng.randint(1, b)
    return [
        (f"{name} has {a} {cs} with {b} {items} in each. How many {items} is that?",
         f"{a} times {b} is {total}, so {name} has {total} {items}."),
        (f"What if {pron} gets {more} more {cs if more > 1 else c} of the same size?",
         f"That adds {more} times {b}, which is {more * b}. The new total is {total} plus {more * b}, or {total + more * b} {items}."),
        (f"And if {pron} then gives away {eat} {items if eat > 1 else item}?",
         f"{total + more * b} minus {eat} is {total + more * b - eat}. {name} would have {total + more * b - eat} {items} left."),
        (f"Can {pron} split those evenly between two people?",
         (f"Yes. {total + more * b - eat} is even, so each person gets {(total + more * b - eat) // 2} {items}."
          if (total + more * b - eat) % 2 == 0 else
          f"Not exactly. {total + more * b - eat} is odd, so each person gets {(total + more * b - eat) // 2} and one is left over.")),
    ]


def word_chat(rng, w):
    word, pos, defn, ex = rng.choice(WORDS)
    return [
        (rng.choice([f"What does the word \"{word}\" mean?", f"What is the meaning of {word}?",
                     f"Can you define \"{word}\" for me?"]),
         f"\"{cap(word)}\" is {a_an(pos)} that means {defn}."),
        ("How do you spell it?", f"It is spelled {spell(word)}."),
        ("How many letters does it have?", f"It has {len(word)} letters."),
        ("Can you use it in a sentence?", f"Sure: {ex}"),
    ]


def howto_chat(rng, w):
    title, minutes, steps = rng.choice(HOWTOS)
    firsts = " ".join(steps[:2])
    lasts = " ".join(steps[2:])
    k = rng.randint(2, 4)
    return [
        (rng.choice([f"How do I {title}?", f"What are the steps to {title}?", f"Could you explain how to {title}?"]),
         f"Start like this. {firsts}"),
        ("What comes next?", lasts),
        ("How long does it take?", f"It takes about {minutes} minutes in all."),
        (f"And if I do it {k} times?",
         f"At about {minutes} minutes each, {k} times would take about {k * minutes} minutes."),
    ]


def single_turn(rng, w):
    """(topic, [(question, answer)]) for a one-exchange conversation."""
    r = rng.random()
    if r < 0.3:
        q, ans, _ = problem(rng, w)
        return "math", [(q, ans)]
    if r < 0.45:
        word, pos, defn, ex = rng.choice(WORDS)
        if rng.random() < 0.5:
            return "words", [(f"How do you spell the word that means {defn}?",
                              f"That word is \"{word}\", spelled {spell(word)}.")]
        return "words", [(f"Please explain what \"{word}\" means and give an example.",
                          f"\"{cap(word)}\" is {a_an(pos)} that means {defn}. For example: {ex}")]
    if r < 0.6:
        a = rng.randint(12, 199)
        b = rng.randint(12, 199 if rng.random() < 0.5 else 30)
        op = rng.choice(["plus", "minus", "times"])
        if op == "minus" and b > a:
            a, b = b, a
        res = {"plus": a + b, "minus": a - b, "times": a * b}[op]
        return "math", [(rng.choice([f"Could you work out {a} {op} {b} for me?", f"Please calculate {a} {op} {b}.",
                                     f"Quick question: what do you get from {a} {op} {b}?"]),
                         rng.choice([f"Sure. {a} {op} {b} equals {commas(res)}.",
                                     f"The answer is {commas(res)}, because {a} {op} {b} makes {commas(res)}."]))]
    if r < 0.95:
        return "world", [entity_fact(rng, w)]
    title, minutes, steps = rng.choice(HOWTOS)
    return "howto", [(f"Give me short steps to {title}.",
                      " ".join(f"{ORDINALS[i]}, {s[0].lower() + s[1:]}" for i, s in enumerate(steps)))]


MULTI_TURN = [(entity_chat, "world"), (entity_chat, "world"), (math_chat, "math"),
              (word_chat, "words"), (howto_chat, "howto")]


def make_chats(rng, w):
    convs, seen = [], set()
    while len(convs) < N_CHATS:
        if rng.random() < 0.6:
            topic, qas = single_turn(rng, w)
        else:
            gen, topic = rng.choice(MULTI_TURN)
            qas = gen(rng, w)
            qas = qas[: min(rng.choice([2, 2, 2, 2, 3, 3, 4]), len(qas))]
        msgs = []
        if rng.random() < 0.25:
            msgs.append({"role": "system", "content": rng.choice(SYSTEM_GENERAL + SYSTEM_TOPIC[topic])})
        for q, ans in qas:
            msgs.append({"role": "user", "content": q})
            msgs.append({"role": "assistant", "content": ans})
        key = json.dumps(msgs)
        if key in seen:
            continue
        seen.add(key)
        convs.append(msgs)
    return convs


def make_prompt_completion(rng, w):
    rows, seen = [], set()
    while len(rows) < N_PC:
        r = rng.random()
        if r < 0.25:
            a, b = rng.randint(2, 99), rng.randint(2, 99)
            op = rng.choice(["+", "-", "plus", "times"])
            if op == "-" and b > a:
                a, b = b, a
            res = {"+": a + b, "-": a - b, "plus": a + b, "times": a * b}[op]
            p, c = f"Question: What is {a} {op} {b}?\nAnswer:", f" {res}"
        elif r < 0.4:
            q, _, short = problem(rng, w)
            p, c = f"Question: {q}\nAnswer:", f" {short}"
        elif r < 0.45:
            q, ans, _ = problem(rng, w)
            p, c = f"Solve the problem and show the working.\n{q}\nWorking:", f" {ans}"
        elif r < 0.55:
            word = rng.choice(WORDS)[0]
            p, c = f"Spell the word \"{word}\" letter by letter.\nSpelling:", f" {spell(word)}"
        elif r < 0.65:
            word, pos, defn, _ = rng.choice(WORDS)
            p, c = f"Define the {pos} \"{word}\".\nDefinition:", f" {cap(defn)}."
        elif r < 0.82:
            t = rng.choice(w["towns"])
            choice = rng.randrange(4)
            if choice == 0:
                p, c = f"Question: On which river does {t['name']} stand?\nAnswer:", f" The River {t['river']}."
            elif choice == 1:
                p, c = f"Question: In what year was {t['name']} founded?\nAnswer:", f" {t['founded']}"
            elif choice == 2:
                p, c = f"Complete the sentence: {t['name']} is known for its", f" {t['product']}."
            else:
                p, c = f"Question: In which month is the {t['festival']} held in {t['name']}?\nAnswer:", f" {t['festival_month']}"
        elif r < 0.91:
            v = rng.choice(w["inventions"])
            p, c = f"Complete the sentence: The {v['name']} was invented in {v['year']} by", f" {full(v['inventor'])}, a {v['trade']} from {v['town']}."
        else:
            a = rng.choice(w["animals"])
            p, c = f"Complete the sentence: The {a['name']} is {a_an(a['class'])} that feeds on", f" {a['diet']}."
        if p in seen:
            continue
        seen.add(p)
        rows.append({"prompt": p, "completion": c})
    return rows


def make_prompt_completion_chat(rng, w):
    rows, seen = [], set()
    while len(rows) < N_PC_CHAT:
        q, ans = single_turn(rng, w)[1][0]
        if q in seen:
            continue
        seen.add(q)
        rows.append({"prompt": [{"role": "user", "content": q}],
                     "completion": [{"role": "assistant", "content": ans}]})
    return rows


# ----------------------------------------------------------------------------- checks

def filter_reason(doc):
    """The default text filter of distill (src/data/filter.rs), re-stated: None when kept."""
    n = len(doc)
    if n < 32:
        return "min_chars"
    sym = sum(1 for ch in doc if not (ch.isalnum() or ch.isspace() or ch in ".,;:!?'\"()-"))
    if sym / n > 0.2:
        return "symbol_ratio"
    alpha = sum(1 for ch in doc if ch.isalpha())
    upper = sum(1 for ch in doc if ch.isupper())
    if alpha / n < 0.5:
        return "alpha_ratio"
    if upper / max(alpha, 1) > 0.3:
        return "upper_ratio"
    words = [x for x in (t.strip("".join(ch for ch in map(chr, range(128)) if not ch.isalnum())).lower()
                         for t in doc.split()) if x]
    if len(words) >= 4:
        grams = [" ".join(words[i:i + 3]) for i in range(len(words) - 2)]
        if (len(grams) - len(set(grams))) / len(grams) > 0.3:
            return "repeated_3grams"
    return None


def check(name, docs):
    reasons = {}
    for d in docs:
        r = filter_reason(d)
        if r:
            reasons[r] = reasons.get(r, 0) + 1
    dups = len(docs) - len(unique(docs))
    kept = len(docs) - sum(reasons.values())
    print(f"  filter check {name}: {kept}/{len(docs)} pass the text rules, {dups} exact duplicates"
          + (f", removed: {reasons}" if reasons else ""))
    return reasons


# ----------------------------------------------------------------------------- writing

def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")


README = """# Sample data

Small samples of each input format distill reads, for recipes and tests. All of it is
generated by `python3 scripts/make_data_samples.py` (standard library plus pyarrow, which
writes the Parquet files; seeded, so a rerun with the same pyarrow version gives byte-identical
files; these were written with pyarrow {pa_version}). The text is procedural English from
templates and short word lists about a made-up region: towns, rivers, animals and inventions
that do not exist, plus word problems, unit conversions, spelling and definition questions and
short how-to steps. Facts agree across files, and every arithmetic answer is computed by the
script. The data is generated, not copied, and is licensed Apache-2.0 like the project.

- `sample.txt`: plain text, {n_txt} documents separated by a blank line; a document may span
  several lines (titles, numbered steps, question and answer lines).
- `sample.jsonl`: {n_jsonl} documents, one JSON object `{{"text": ...}}` per line (different
  documents from `sample.txt`).
- `text.parquet`: the {n_jsonl} documents of `sample.jsonl` as a single `text` string column;
  zstd compression, row groups of 100 rows ({rg_text} row groups).
- `chat.jsonl`: {n_chat} conversations in TRL's conversational format, one
  `{{"messages": [{{"role": ..., "content": ...}}, ...]}}` per line. Roles are `system`, `user` and
  `assistant`; {n_sys} conversations start with a system message, {n_single} are single-turn and
  {n_multi} have 2 to 4 user/assistant exchanges, and every conversation ends with an assistant
  message.
- `chat.parquet`: the same {n_chat} conversations in the same order, with columns `id` (int64,
  0-based line number in `chat.jsonl`) and `messages`
  (list<struct<role: string, content: string>>); snappy compression, row groups of 100 rows
  ({rg_chat} row groups).
- `prompt_completion.jsonl`: {n_pc} plain-text pairs `{{"prompt": ..., "completion": ...}}`, for
  example a prompt ending in `Answer:` and a completion starting with a space.
- `prompt_completion_chat.jsonl`: {n_pcc} conversational pairs
  `{{"prompt": [{{"role": "user", ...}}], "completion": [{{"role": "assistant", ...}}]}}`.
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(root, "data"))
    out = ap.parse_args().out
    os.makedirs(out, exist_ok=True)

    w = build_world(random.Random(SEED))
    txt_docs, jsonl_docs = make_documents(random.Random(SEED + 1), w)
    chats = make_chats(random.Random(SEED + 2), w)
    pcs = make_prompt_completion(random.Random(SEED + 3), w)
    pccs = make_prompt_completion_chat(random.Random(SEED + 4), w)
    assert len(txt_docs) == N_TEXT_DOCS and len(jsonl_docs) == N_TEXT_DOCS
    for d in txt_docs:
        assert "\n\n" not in d and d == d.strip()
    everything = txt_docs + jsonl_docs + [m["content"] for c in chats for m in c]
    everything += [r["prompt"] + r["completion"] for r in pcs]
    assert all(s.isascii() for s in everything)

    with open(os.path.join(out, "sample.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("\n\n".join(txt_docs) + "\n")
    write_jsonl(os.path.join(out, "sample.jsonl"), [{"text": d} for d in jsonl_docs])
    write_jsonl(os.path.join(out, "chat.jsonl"), [{"messages": c} for c in chats])
    write_jsonl(os.path.join(out, "prompt_completion.jsonl"), pcs)
    write_jsonl(os.path.join(out, "prompt_completion_chat.jsonl"), pccs)

    msg_type = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    chat_table = pa.table({
        "id": pa.array(range(len(chats)), type=pa.int64()),
        "messages": pa.array(chats, type=msg_type),
    })
    pq.write_table(chat_table, os.path.join(out, "chat.parquet"), compression="snappy",
                   row_group_size=100)
    text_table = pa.table({"text": pa.array(jsonl_docs, type=pa.string())})
    pq.write_table(text_table, os.path.join(out, "text.parquet"), compression="zstd",
                   row_group_size=100)

    n_sys = sum(1 for c in chats if c[0]["role"] == "system")
    n_single = sum(1 for c in chats if sum(m["role"] == "user" for m in c) == 1)
    rg_chat = pq.ParquetFile(os.path.join(out, "chat.parquet")).num_row_groups
    rg_text = pq.ParquetFile(os.path.join(out, "text.parquet")).num_row_groups
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8", newline="\n") as f:
        f.write(README.format(n_txt=len(txt_docs), n_jsonl=len(jsonl_docs), n_chat=len(chats),
                              n_sys=n_sys, n_single=n_single, n_multi=len(chats) - n_single,
                              n_pc=len(pcs), n_pcc=len(pccs), rg_chat=rg_chat, rg_text=rg_text,
                              pa_version=pa.__version__))

    print(f"wrote {out}:")
    total = 0
    for name in sorted(os.listdir(out)):
        p = os.path.join(out, name)
        size = os.path.getsize(p)
        total += size
        digest = hashlib.sha256(open(p, "rb").read()).hexdigest()[:16]
        print(f"  {name:32s} {size:8,d} bytes  sha256 {digest}")
    print(f"  {'total':32s} {total:8,d} bytes")
    check("sample.txt", txt_docs)
    check("sample.jsonl", jsonl_docs)
    overlap = len(set(txt_docs) & set(jsonl_docs))
    print(f"  documents shared by sample.txt and sample.jsonl: {overlap}")
    check("chat.jsonl (contents joined)", ["\n".join(m["content"] for m in c) for c in chats])
    check("prompt_completion.jsonl", [r["prompt"] + r["completion"] for r in pcs])
    check("prompt_completion_chat.jsonl",
          [r["prompt"][0]["content"] + "\n" + r["completion"][0]["content"] for r in pccs])
    print(f"  chats: {n_sys} with a system message, {n_single} single-turn, "
          f"{len(chats) - n_single} multi-turn; parquet row groups: chat {rg_chat}, text {rg_text}")


if __name__ == "__main__":
    sys.exit(main())
