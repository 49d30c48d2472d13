use super::*;
use std::collections::{HashMap, HashSet};

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_ascii_alphabetic()).filter(|w| !w.is_empty()).map(|w| w.to_ascii_lowercase()).collect()
}
fn num(w: &str) -> Option<usize> {
    NUMS.iter().position(|n| *n == w)
}
fn sentences(doc: &str) -> Vec<&str> {
    doc.split('.').map(str::trim).filter(|s| !s.is_empty()).collect()
}
fn docs() -> Vec<String> {
    generate(42, 2000)
}

#[test]
fn deterministic_and_seed_sensitive() {
    assert_eq!(generate(7, 50), generate(7, 50));
    assert_ne!(generate(7, 50), generate(8, 50));
    let mut g = StoryGen::new(7);
    assert_eq!(g.next_story(), generate(7, 1)[0]);
}

#[test]
fn well_formed() {
    for d in docs() {
        assert!(d.is_ascii() && !d.is_empty() && d.ends_with('.'), "{d}");
        assert!(!d.contains("  ") && !d.starts_with(' '), "{d}");
        assert!(d.starts_with(|c: char| c.is_ascii_uppercase()), "{d}");
        let n = d.split_whitespace().count();
        assert!((40..=160).contains(&n), "{n} words: {d}");
        assert!(sentences(&d).len() >= 3, "{d}");
    }
}

#[test]
fn counting_is_consistent() {
    let (mut checked, mut answers) = (0, 0);
    for d in docs() {
        let mut count: Option<(usize, usize)> = None; // (count, item index)
        for s in sentences(&d) {
            let w = words(s);
            let had = w.iter().position(|x| x == "had").filter(|&p| p + 2 < w.len() && num(&w[p + 1]).is_some());
            if let Some(p) = had {
                let n = num(&w[p + 1]).unwrap();
                let it = ITEMS.iter().position(|i| i.0 == w[p + 2] || i.1 == w[p + 2]).expect(s);
                assert_eq!(w[p + 2], if n == 1 { ITEMS[it].0 } else { ITEMS[it].1 }, "agreement: {d}");
                if w[0] == "now" {
                    assert_eq!(count, Some((n, it)), "arithmetic: {d}");
                    checked += 1;
                } else {
                    count = Some((n, it));
                }
                continue;
            }
            let Some((c, it)) = count.as_mut() else { continue };
            for i in 0..w.len() {
                let Some(m) = num(&w[i]) else { continue };
                if w.get(i + 1).is_some_and(|x| x == "more") {
                    *c += m;
                } else if i >= 1 && ["gave", "shared", "ate", "lost", "dropped"].contains(&w[i - 1].as_str())
                    || i >= 2 && w[i - 2] == "gave"
                {
                    *c -= m;
                } else if i >= 2 && w[i - 2] == "i" && w[i - 1] == "have" {
                    assert_eq!((m, w[i + 1].as_str()), (*c, if m == 1 { ITEMS[*it].0 } else { ITEMS[*it].1 }), "{d}");
                    answers += 1;
                }
            }
        }
    }
    assert!(checked > 300 && answers > 50, "{checked} {answers}");
}

#[test]
fn pronouns_agree_with_nearest_name() {
    let mut checked = 0;
    for d in docs() {
        let w = words(&d);
        let mut last: Option<Gender> = None;
        for (i, t) in w.iter().enumerate() {
            if let Some(c) = CAST.iter().find(|c| c.0.eq_ignore_ascii_case(t)) {
                last = Some(c.1);
                continue;
            }
            let g = match t.as_str() {
                "he" | "him" | "his" => He,
                "she" | "her" => She,
                "they" | "them" | "their" => They,
                _ => continue,
            };
            assert_eq!(last, Some(g), "pronoun {t} at word {i}: {d}");
            if ["he", "she", "they"].contains(&t.as_str())
                && let Some(v) = w.get(i + 1).filter(|v| *v == "was" || *v == "were")
            {
                assert_eq!(v, if g == They { "were" } else { "was" }, "{d}");
            }
            checked += 1;
        }
    }
    assert!(checked > 2000, "{checked}");
}

#[test]
fn answers_name_where_object_was_put() {
    let mut checked = 0;
    for d in docs() {
        let mut at: HashMap<String, &str> = HashMap::new();
        let ss = sentences(&d);
        for (i, s) in ss.iter().enumerate() {
            let phrase = COLORS
                .iter()
                .flat_map(|c| OBJECTS.iter().map(move |o| format!("{c} {o}")))
                .find(|p| s.contains(p.as_str()));
            let Some(p) = phrase else { continue };
            if s.contains('?') {
                if let Some(loc) = at.get(&p) {
                    assert!(ss[i + 1].contains(loc), "expected {loc}: {d}");
                    checked += 1;
                }
            } else if !s.contains('"')
                && let Some(loc) = LOCS.iter().find(|l| s.contains(*l))
            {
                at.insert(p, loc);
            }
        }
    }
    assert!(checked > 200, "{checked}");
}

#[test]
fn diverse() {
    let d = docs();
    let distinct: HashSet<&String> = d.iter().collect();
    assert!(distinct.len() * 100 >= d.len() * 95, "{} distinct", distinct.len());
    let vocab: HashSet<String> = d.iter().flat_map(|s| words(s)).collect();
    assert!(vocab.len() >= 300, "vocab {}", vocab.len());
}
