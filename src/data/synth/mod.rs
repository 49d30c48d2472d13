//! Default training corpus: short English stories drawn from a seeded,
//! weighted grammar. Every story keeps its own facts straight (counts add up,
//! pronouns follow names, answers name where things were put), so a model must
//! track state to predict the next token, and a teacher's soft distribution
//! carries more than surface statistics.

/// The project's SplitMix64 with the draws a grammar needs.
struct Rng(crate::rng::SplitMix);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0.below(n)
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, pct: usize) -> bool {
        self.below(100) < pct
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
    fn weighted(&mut self, w: &[usize]) -> usize {
        let mut r = self.below(w.iter().sum());
        w.iter()
            .position(|&x| {
                r < x || {
                    r -= x;
                    false
                }
            })
            .unwrap()
    }
}

mod lexicon;
use lexicon::*;

fn a_an(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" }
}

/// Capitalizes sentence starts after rendering, because whether a slot became
/// "she" or "Mia" is only known then. `?"` and `!"` end a quote, not a sentence.
fn capitalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let (mut up, mut prev) = (true, ' ');
    for ch in s.chars() {
        if prev != ' ' && ch == ' ' && matches!(prev, '.' | '!' | '?') {
            up = true;
        }
        if up && ch.is_ascii_alphabetic() {
            out.push(ch.to_ascii_uppercase());
            up = false;
        } else {
            out.push(ch);
        }
        prev = ch;
    }
    out
}

/// One story in progress. `last` is the most recently mentioned character:
/// a pronoun is only ever used for them, so every pronoun has exactly one
/// reading (the nearest preceding name), which the tests check. Readers also
/// expect a pronoun to continue the previous subject, so when another seen
/// character shares the gender, a pronoun needs `last` to have been a subject.
struct Writer<'r> {
    rng: &'r mut Rng,
    who: [usize; 3],
    x: usize, // actor of the current episode
    y: usize, // their partner
    place: usize,
    time: &'static str,
    last: Option<usize>,
    last_subj: bool,
    seen: u32, // bitmask over CAST
    owned: Option<(usize, &'static str, &'static str)>,
    out: Vec<String>,
}

impl<'r> Writer<'r> {
    fn new(rng: &'r mut Rng) -> Self {
        let a = rng.below(CAST.len());
        let b = (a + 1 + rng.below(CAST.len() - 1)) % CAST.len();
        let mut c = rng.below(CAST.len());
        while c == a || c == b {
            c = rng.below(CAST.len());
        }
        let place = rng.below(PLACES.len());
        Writer {
            rng,
            who: [a, b, c],
            x: a,
            y: b,
            place,
            time: "",
            last: None,
            last_subj: false,
            seen: 0,
            owned: None,
            out: Vec::new(),
        }
    }

    fn person(&mut self, c: usize, form: &str) -> String {
        let (name, g, role, hobby) = CAST[c];
        let [subj, obj, poss, be, kind] = g.forms();
        let rival = CAST.iter().enumerate().any(|(i, o)| i != c && o.1 == g && self.seen & (1 << i) != 0);
        let mine = self.last == Some(c) && (self.last_subj || !rival);
        let s = match form {
            "kind" => return kind.into(),
            "role" => return role.into(),
            "arole" => return format!("{} {role}", a_an(role)),
            "hobby" => return hobby.into(),
            "n" => {
                self.last_subj = false;
                name.into()
            }
            "o" => {
                if mine {
                    obj.into()
                } else {
                    self.last_subj = false;
                    name.into()
                }
            }
            "p" => {
                if mine {
                    poss.into()
                } else {
                    self.last_subj = false;
                    format!("{name}'s")
                }
            }
            "" | "be" => {
                self.last_subj = true;
                // Names sometimes repeat even when a pronoun would do, as in real text.
                let pron = mine && self.rng.chance(80);
                let w = if pron { subj } else { name };
                if form == "be" { format!("{w} {}", if pron { be } else { "was" }) } else { w.into() }
            }
            _ => panic!("unknown form {form}"),
        };
        self.last = Some(c);
        self.seen |= 1 << c;
        s
    }

    /// Slots are filled strictly left to right so `last` follows reading order.
    fn say(&mut self, tpl: &str, vars: &[(&str, &str)]) {
        let (mut out, mut rest) = (String::new(), tpl);
        while let Some(i) = rest.find('{') {
            let j = i + rest[i..].find('}').expect("unclosed slot");
            out.push_str(&rest[..i]);
            let key = &rest[i + 1..j];
            let val = match vars.iter().find(|(k, _)| *k == key) {
                Some((_, v)) => v.to_string(),
                None if key == "t" => {
                    // Never the same time phrase twice in a row: it reads as a glitch.
                    let t = loop {
                        let t = self.rng.pick(&TIMES);
                        if t != self.time {
                            break t;
                        }
                    };
                    self.time = t;
                    t.into()
                }
                None if key == "place" => PLACES[self.place].0.into(),
                None => {
                    let (r, form) = key.split_once('.').unwrap_or((key, ""));
                    let c = match r {
                        "a" => self.who[0],
                        "b" => self.who[1],
                        "c" => self.who[2],
                        "x" => self.x,
                        "y" => self.y,
                        _ => panic!("unknown slot {key}"),
                    };
                    self.person(c, form)
                }
            };
            out.push_str(&val);
            rest = &rest[j + 1..];
        }
        out.push_str(rest);
        self.out.push(capitalize(&out));
    }

    fn say_one(&mut self, tpls: &[&str], vars: &[(&str, &str)]) {
        let t = self.rng.pick(tpls);
        self.say(t, vars);
    }

    /// Picks who acts next among the two introduced friends.
    fn pair(&mut self) {
        let flip = self.rng.chance(50);
        (self.x, self.y) = if flip { (self.who[1], self.who[0]) } else { (self.who[0], self.who[1]) };
    }

    fn intro(&mut self) {
        let home = self.rng.pick(&HOMES);
        self.say_one(
            &[
                "Once upon a time, there was a {a.kind} named {a.n}. {a.be} {a.arole} who liked to {a.hobby}.",
                "{a.n} the {a.role} lived in a little house near the {home}.",
                "There was once {a.arole} named {a.n}. Every day, {a} liked to {a.hobby}.",
                "{a.n} was {a.arole}, and {a} loved to {a.hobby}.",
            ],
            &[("home", home)],
        );
        self.say_one(
            &[
                "{a.p} best friend was {b.n} the {b.role}.",
                "{a} had a good friend named {b.n}.",
                "{b.n} the {b.role} lived next door.",
                "One day, {a} met {b.n}, {b.arole}.",
            ],
            &[],
        );
    }

    fn setting(&mut self, activity: bool) {
        self.say_one(
            &[
                "{t}, {a.n} and {b.n} went to the {place}.",
                "{t}, {a} walked to the {place} with {b.o}.",
                "{a.n} and {b.n} visited the {place} {t}.",
            ],
            &[],
        );
        let (_, detail, acts) = PLACES[self.place];
        if self.rng.chance(70) {
            self.say(detail, &[]);
        }
        if activity || self.rng.chance(50) {
            self.pair();
            let act = self.rng.pick(&acts);
            self.say_one(&["{a.n} and {b.n} {act}.", "The two friends {act}.", "There, {x} {act}."], &[("act", act)]);
        }
    }

    fn counting(&mut self, qa: bool) {
        let (sing, plur, edible) = self.rng.pick(&ITEMS);
        let th = |k: usize| if k == 1 { sing } else { plur };
        let mut n = self.rng.range(2, 9);
        self.say_one(
            &[
                "{x} had {n} {th}.",
                "{t}, {x} had {n} {th}.",
                "{x} had {n} {th} in {x.p} basket.",
                "At the {place}, {x} had {n} {th}.",
            ],
            &[("n", NUMS[n]), ("th", th(n))],
        );
        for _ in 0..self.rng.range(1, 2) {
            let minus = if n == 0 { 0 } else { 4 };
            // Operations: give, eat, find more, lose.
            let op = self.rng.weighted(&[minus, if edible { minus } else { 0 }, if n < 12 { 3 } else { 0 }, minus / 2]);
            // Emptying the whole stock is allowed but rare, so "zero" stays a surprise.
            let m = match op {
                2 => self.rng.range(1, (12 - n).min(4)),
                _ if n > 1 && self.rng.chance(85) => self.rng.range(1, n - 1),
                _ => self.rng.range(1, n),
            };
            let tpls: &[&str] = match op {
                0 => &["{x} gave {m} to {y.o}.", "{x} gave {m} of the {pl} to {y.o}.", "{x} shared {m} with {y.o}."],
                1 => &["{x} ate {m}.", "Because {x.be} hungry, {x} ate {m}.", "{x.be} hungry, so {x} ate {m}."],
                2 => &["Then {x} found {m} more.", "{y} gave {x.o} {m} more.", "{t}, {x} found {m} more."],
                _ => &["On the way home, {x} dropped {m}.", "Oh no! {x} lost {m}.", "Sadly, {x} lost {m}."],
            };
            self.say_one(tpls, &[("m", NUMS[m]), ("pl", plur)]);
            n = if op == 2 { n + m } else { n - m };
            self.say("Now {x} had {n} {th}.", &[("n", NUMS[n]), ("th", th(n))]);
        }
        if qa {
            self.say(
                "\"How many {pl} do you have now?\" asked {y.n}. \"I have {n} {th},\" said {x.n}.",
                &[("pl", plur), ("n", NUMS[n]), ("th", th(n))],
            );
        }
    }

    fn cause(&mut self) {
        let (c, effects) = self.rng.pick(CAUSES);
        let e = self.rng.pick(effects);
        let t = match self.rng.weighted(&[3, 3, 2, 1, 2]) {
            0 => format!("Because {c}, {e}."),
            1 => format!("{c}, so {e}."),
            2 => format!("{e} because {c}."),
            3 => format!("When {c}, {e}."),
            _ => format!("Later, {c}, so {e}."),
        };
        self.say(&t, &[]);
    }

    fn own(&mut self) {
        let (col, obj) = (self.rng.pick(&COLORS), self.rng.pick(&OBJECTS));
        self.owned = Some((self.x, col, obj));
        self.say_one(
            &[
                "{x} had a new {col} {obj}.",
                "{x.p} favorite thing was {acol} {obj}.",
                "{t}, {y} gave {x.o} {acol} {obj} as a gift.",
            ],
            &[("col", col), ("obj", obj), ("acol", &format!("{} {col}", a_an(col)))],
        );
    }

    fn own_qa(&mut self) {
        let Some((owner, col, obj)) = self.owned else { return };
        self.x = owner;
        self.y = if owner == self.who[0] { self.who[1] } else { self.who[0] };
        let guess = if self.rng.chance(30) { col } else { self.rng.pick(&COLORS) };
        let ans = if guess == col { "Yes" } else { "No" };
        self.say_one(
            &[
                "\"What color is your {obj}?\" asked {y.n}. \"It is {col},\" said {x.n}.",
                "\"Is your {obj} {guess}?\" asked {y.n}. \"{ans}, it is {col},\" said {x.n}.",
            ],
            &[("obj", obj), ("col", col), ("guess", guess), ("ans", ans)],
        );
    }

    /// Objects are put somewhere, maybe a distractor too, maybe one is moved by
    /// a third person; the answer must come from whoever placed it last.
    fn lost(&mut self) {
        let owner = self.owned.map_or(self.x, |o| o.0);
        let other = if owner == self.who[0] { self.who[1] } else { self.who[0] };
        let (col, obj) = match self.owned {
            Some((_, c, o)) => (c, o),
            None => (self.rng.pick(&COLORS), self.rng.pick(&OBJECTS)),
        };
        let mut things = vec![(col, obj, self.rng.below(LOCS.len()), owner)];
        (self.x, self.y) = (owner, other);
        self.say_one(
            &[
                "{t}, {x} put {x.p} {col} {obj} {loc}.",
                "{x} left {x.p} {col} {obj} {loc}.",
                "Before going out, {x} hid {x.p} {col} {obj} {loc}.",
            ],
            &[("col", col), ("obj", obj), ("loc", LOCS[things[0].2])],
        );
        if self.rng.chance(40) {
            let obj2 = loop {
                let o = self.rng.pick(&OBJECTS);
                if o != obj {
                    break o;
                }
            };
            let loc2 = (things[0].2 + 1 + self.rng.below(LOCS.len() - 1)) % LOCS.len();
            let col2 = self.rng.pick(&COLORS);
            self.say("{x} also put {x.p} {col} {obj} {loc}.", &[("col", col2), ("obj", obj2), ("loc", LOCS[loc2])]);
            things.push((col2, obj2, loc2, owner));
        }
        if self.rng.chance(50) {
            self.pair();
            self.cause();
        }
        if self.rng.chance(40) {
            let i = self.rng.below(things.len());
            let to = (things[i].2 + 1 + self.rng.below(LOCS.len() - 1)) % LOCS.len();
            (things[i].2, things[i].3) = (to, self.who[2]);
            self.say_one(
                &[
                    "Later, {c.n} the {c.role} found the {col} {obj} and put it {loc}.",
                    "Then {c.n} came by and moved the {col} {obj} {loc}.",
                ],
                &[("col", things[i].0), ("obj", things[i].1), ("loc", LOCS[to])],
            );
        }
        let (col, obj, loc, placer) = things[self.rng.below(things.len())];
        let asker = if placer == owner {
            other
        } else if self.rng.chance(50) {
            owner
        } else {
            other
        };
        (self.x, self.y) = (asker, placer);
        let (det, qd) = if asker == owner { ("{x.p}", "my") } else { ("the", "the") };
        let vars = [("col", col), ("obj", obj), ("loc", LOCS[loc]), ("qd", qd)];
        let lead = self.rng.pick(&[
            "{t}, {x} wanted to play with {det} {col} {obj}, but {x} could not find it.",
            "{t}, {x} looked for {det} {col} {obj}, but it was gone.",
            "{t}, {x} needed {det} {col} {obj}.",
        ]);
        self.say(&lead.replace("{det}", det), &vars);
        self.say_one(
            &[
                "\"Where is {qd} {col} {obj}?\" asked {x.n}.",
                "\"Have you seen {qd} {col} {obj}?\" {x} asked.",
                "\"{y.n}, do you know where {qd} {col} {obj} is?\" asked {x.n}.",
            ],
            &vars,
        );
        self.say_one(
            &[
                "\"It is {loc},\" said {y.n}.",
                "\"I put it {loc},\" said {y.n}.",
                "\"Look {loc},\" {y} said.",
                "\"I think it is {loc},\" said {y.n}.",
            ],
            &vars,
        );
        let follow = self.rng.pick(&[
            "{x} looked {loc} and found {det} {col} {obj}.",
            "\"Thank you, {y.n}!\" said {x.n}.",
            "{x} ran to get it.",
        ]);
        self.say(&follow.replace("{det}", det), &vars);
    }

    fn story(mut self) -> String {
        self.intro();
        match self.rng.weighted(&[3, 3, 2, 2, 1]) {
            0 => {
                if self.rng.chance(50) {
                    self.setting(false);
                }
                self.pair();
                let qa = self.rng.chance(40);
                self.counting(qa);
                if self.rng.chance(50) {
                    self.pair();
                    self.cause();
                }
            }
            1 => {
                self.pair();
                if self.rng.chance(40) {
                    self.own();
                }
                if self.rng.chance(40) {
                    self.setting(false);
                }
                self.lost();
            }
            2 => {
                self.setting(true);
                for _ in 0..self.rng.range(1, 2) {
                    self.pair();
                    self.cause();
                }
                if self.rng.chance(40) {
                    self.pair();
                    self.own();
                    self.own_qa();
                }
            }
            3 => {
                self.pair();
                self.own();
                let qa = self.rng.chance(50);
                self.pair();
                self.counting(qa);
                self.pair();
                self.cause();
                self.own_qa();
            }
            _ => {
                for _ in 0..self.rng.range(2, 4) {
                    self.pair();
                    self.cause();
                }
            }
        }
        self.say_one(
            &[
                "At the end of the day, {a} went home happy.",
                "It was a wonderful day.",
                "{a.n} and {b.n} smiled at each other.",
                "That night, {a} dreamed about the {place}.",
                "{a.n} and {b.n} were very happy.",
                "Then everyone went home for dinner.",
                "{b} would never forget that day.",
                "In the end, everyone was happy.",
            ],
            &[],
        );
        self.out.join(" ")
    }
}

/// One document from a given RNG state, so callers can stream.
pub struct StoryGen {
    rng: Rng,
}

impl StoryGen {
    pub fn new(seed: u64) -> Self {
        StoryGen { rng: Rng(crate::rng::SplitMix(seed)) }
    }

    pub fn next_story(&mut self) -> String {
        // Rejection keeps lengths in range without bending the grammar; the
        // retry draws from the same stream, so determinism is preserved.
        loop {
            let s = Writer::new(&mut self.rng).story();
            if (40..=160).contains(&s.split(' ').count()) {
                return s;
            }
        }
    }
}

/// `n` junk documents made from `docs` (seeded): exact and near duplicates, one phrase
/// repeated, symbol noise, upper-case shouting and word salad, in equal shares. They stand in
/// for the web's boilerplate, spam and scraping debris, so that filters have work to do.
pub fn noise(seed: u64, docs: &[String], n: usize) -> Vec<String> {
    let mut rng = crate::rng::SplitMix(seed ^ 0x9015_e000);
    let vocab: Vec<&str> = docs.iter().take(200).flat_map(|d| d.split(' ')).collect();
    (0..n)
        .map(|i| {
            let src = &docs[rng.below(docs.len())];
            let mut w: Vec<String> = src.split(' ').map(str::to_string).collect();
            match i % 6 {
                0 => src.clone(),
                1 => {
                    for _ in 0..1 + rng.below(2) {
                        let j = rng.below(w.len());
                        w[j] = vocab[rng.below(vocab.len())].to_string();
                    }
                    w.join(" ")
                }
                2 => {
                    let s = rng.below(w.len().saturating_sub(6).max(1));
                    let phrase = w[s..(s + 6).min(w.len())].join(" ");
                    vec![phrase; 8].join(" ")
                }
                3 => w
                    .iter()
                    .map(|x| {
                        if rng.below(2) == 0 {
                            "#$%&*@<>{}|~^".chars().cycle().skip(rng.below(13)).take(4).collect()
                        } else {
                            x.clone()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                4 => src.to_uppercase(),
                _ => (0..w.len()).map(|_| vocab[rng.below(vocab.len())]).collect::<Vec<_>>().join(" "),
            }
        })
        .collect()
}

/// A story as a conversation (`data.synthetic_format = "chat"`): the user tells the story up
/// to its first question and asks it; the assistant answers with the sentence the story
/// answers it with; the user asks how it goes on, and the assistant tells the rest. A story
/// without a question is asked for whole. What the assistant says follows from what the user
/// said, so a student learns the story's state tracking on the assistant's tokens alone.
pub fn chat_row(story: &str, key: &str) -> serde_json::Value {
    let msg = |role: &str, content: &str| serde_json::json!({"role": role, "content": content});
    // Sentences end at ". ", "? " or "! " (a quote may close them first).
    let ends: Vec<usize> = story
        .match_indices(". ")
        .chain(story.match_indices("? "))
        .chain(story.match_indices("! "))
        .map(|(i, _)| i + 1)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let end_after = |at: usize| ends.iter().copied().find(|&e| e > at).unwrap_or(story.len());
    let messages = match story.find("?\"") {
        Some(q) => {
            let asked = end_after(q + 2);
            let answered = end_after(asked + 1);
            let (question, answer, rest) =
                (story[..asked].trim(), story[asked..answered].trim(), story[answered..].trim());
            let mut m = vec![msg("user", question), msg("assistant", answer)];
            if !rest.is_empty() {
                m.push(msg("user", "What happens next?"));
                m.push(msg("assistant", rest));
            }
            m
        }
        None => vec![msg("user", "Tell me a story."), msg("assistant", story)],
    };
    let mut row = serde_json::Map::new();
    row.insert(key.to_string(), serde_json::Value::Array(messages));
    serde_json::Value::Object(row)
}

/// Deterministic generator: the same seed gives the same documents.
pub fn generate(seed: u64, n_docs: usize) -> Vec<String> {
    let mut g = StoryGen::new(seed);
    (0..n_docs).map(|_| g.next_story()).collect()
}

#[cfg(test)]
mod tests;
