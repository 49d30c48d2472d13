//! The story grammar's vocabulary: the recurring cast (name, gender, traits), items, places,
//! times and cause/effect pairs the writer draws from.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Gender {
    He,
    She,
    They,
}
pub(super) use Gender::*;

impl Gender {
    /// subject, object, possessive, past "be", child noun.
    pub(super) fn forms(self) -> [&'static str; 5] {
        match self {
            He => ["he", "him", "his", "was", "boy"],
            She => ["she", "her", "her", "was", "girl"],
            They => ["they", "them", "their", "were", "child"],
        }
    }
}

/// A fixed cast so names recur across documents and a model can learn each
/// name's pronouns; singular "they" forces was/were agreement to be tracked.
pub(super) const CAST: [(&str, Gender, &str, &str); 24] = [
    ("Mia", She, "baker", "bake sweet bread"),
    ("Tom", He, "farmer", "feed the cows"),
    ("Lily", She, "painter", "paint pictures of the sea"),
    ("Sam", He, "fisher", "catch fish in the river"),
    ("Ben", He, "builder", "build little wooden houses"),
    ("Anna", She, "doctor", "help sick people"),
    ("Max", He, "cook", "make hot soup"),
    ("Lucy", She, "gardener", "grow roses"),
    ("Leo", He, "sailor", "sail a small boat"),
    ("Emma", She, "teacher", "read stories to children"),
    ("Jack", He, "pilot", "fly over the hills"),
    ("Ella", She, "singer", "sing happy songs"),
    ("Noah", He, "tailor", "sew warm coats"),
    ("Zoe", She, "dancer", "dance in the square"),
    ("Finn", He, "clown", "make people laugh"),
    ("Ruby", She, "librarian", "sort old books"),
    ("Omar", He, "mail carrier", "ride a bike around town"),
    ("Nina", She, "nurse", "care for babies"),
    ("Hugo", He, "potter", "make clay pots"),
    ("Rosa", She, "beekeeper", "collect honey"),
    ("Alex", They, "artist", "draw funny animals"),
    ("Robin", They, "musician", "play the drum"),
    ("Kai", They, "inventor", "fix broken clocks"),
    ("Jo", They, "explorer", "climb tall hills"),
];

pub(super) const NUMS: [&str; 13] =
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"];
/// (singular, plural, edible): irregular plurals make agreement non-trivial.
pub(super) const ITEMS: [(&str, &str, bool); 16] = [
    ("apple", "apples", true),
    ("cookie", "cookies", true),
    ("egg", "eggs", true),
    ("berry", "berries", true),
    ("peach", "peaches", true),
    ("candy", "candies", true),
    ("muffin", "muffins", true),
    ("carrot", "carrots", true),
    ("plum", "plums", true),
    ("flower", "flowers", false),
    ("shell", "shells", false),
    ("marble", "marbles", false),
    ("pencil", "pencils", false),
    ("sticker", "stickers", false),
    ("coin", "coins", false),
    ("leaf", "leaves", false),
];
pub(super) const COLORS: [&str; 10] =
    ["red", "blue", "green", "yellow", "purple", "orange", "pink", "white", "black", "brown"];
pub(super) const OBJECTS: [&str; 12] =
    ["ball", "hat", "cup", "book", "kite", "scarf", "bag", "key", "shoe", "drum", "spoon", "boat"];
/// No entry is a substring of another, so a location is unambiguous in text.
pub(super) const LOCS: [&str; 12] = [
    "under the table",
    "on the shelf",
    "behind the door",
    "in the box",
    "next to the bed",
    "under the chair",
    "on the windowsill",
    "inside the basket",
    "near the sofa",
    "behind the curtain",
    "in the drawer",
    "on top of the fridge",
];
pub(super) const TIMES: [&str; 12] = [
    "in the morning",
    "after lunch",
    "in the afternoon",
    "in the evening",
    "one sunny day",
    "on Saturday",
    "before dinner",
    "after school",
    "early in the morning",
    "the next day",
    "one cold morning",
    "on Sunday",
];
pub(super) const HOMES: [&str; 5] = ["river", "forest", "sea", "hills", "old mill"];
/// (place, detail, activities): details and activities fit their place.
pub(super) const PLACES: [(&str, &str, [&str; 3]); 10] = [
    ("park", "There was a big pond with ducks.", ["fed the ducks", "played tag on the grass", "swung on the swings"]),
    ("beach", "The sand was warm and soft.", ["built a sand castle", "looked for crabs", "swam in the waves"]),
    (
        "forest",
        "The trees were tall and green.",
        ["picked mushrooms", "listened to the birds", "followed a narrow path"],
    ),
    (
        "market",
        "The market was full of people.",
        ["bought fresh bread", "looked at the fruit", "talked to the sellers"],
    ),
    (
        "garden",
        "Bees flew from flower to flower.",
        ["watered the plants", "pulled out the weeds", "planted some seeds"],
    ),
    ("farm", "The cows were eating grass.", ["fed the chickens", "rode on a cart", "brushed a pony"]),
    ("library", "It was quiet inside.", ["read a book about stars", "looked at old maps", "sat by the big window"]),
    (
        "river",
        "The water was cold and clear.",
        ["threw stones into the water", "watched the fish", "walked along the bank"],
    ),
    ("zoo", "The lions were sleeping in the sun.", ["watched the monkeys", "fed the goats", "saw a tall giraffe"]),
    ("lake", "A soft wind moved the reeds.", ["rowed a little boat", "skipped flat stones", "had a picnic"]),
];
/// Causes paired only with effects that make sense for them. `x` is the
/// actor, `y` a friend; non-subject slots use `.o`/`.p` so case is right.
pub(super) const CAUSES: &[(&str, &[&str])] = &[
    ("it started to rain", &["{x} opened {x.p} umbrella", "{x} ran inside", "{x} put on {x.p} raincoat"]),
    (
        "the wind was strong",
        &["{x} held on to {x.p} hat", "{x} flew {x.p} kite high in the sky", "{x} closed the window"],
    ),
    ("the sun was hot", &["{x} sat in the shade", "{x} drank some cold water", "{x} went for a swim"]),
    (
        "it began to snow",
        &["{x} built a snowman", "{x} put on {x.p} warm boots", "{x} caught snowflakes on {x.p} tongue"],
    ),
    ("the room was dark", &["{x} turned on the lamp", "{x} lit a candle"]),
    ("the milk spilled on the floor", &["{x} wiped the floor", "{x} got a towel"]),
    ("{x.be} hungry", &["{x} ate some bread", "{x} made a sandwich", "{x} asked {y.o} for some soup"]),
    ("{x.be} tired", &["{x} took a nap", "{x} sat down to rest", "{x} went to bed early"]),
    ("{x.be} cold", &["{x} put on a warm coat", "{x} made a cup of hot tea", "{x} sat by the fire"]),
    ("{x.be} thirsty", &["{x} drank a glass of water", "{x} had some apple juice"]),
    ("{x.be} sad", &["{x} called {x.p} friend {y.n}", "{x} went to see {y.o}", "{x} sang a quiet song"]),
    ("{x.be} bored", &["{x} read a comic", "{x} drew a picture of a cat", "{x} played a game with {y.o}"]),
    ("{x} heard a loud noise", &["{x} looked out the window", "{x} hid under the blanket"]),
    ("{x} saw a little bird", &["{x} gave the bird some seeds", "{x} stopped to watch the bird"]),
    ("{x} stepped in the mud", &["{x} washed {x.p} boots", "{x} took off {x.p} socks"]),
    ("{x.be} happy", &["{x} danced around the room", "{x} sang a song"]),
];
