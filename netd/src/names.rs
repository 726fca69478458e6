//! Ids, Docker-style random names, name validation, and reference resolution.
use rand::RngExt;

/// A 64-hex-digit random id (Docker's container/network ids).
pub fn new_id() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("Invalid container name ({0}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    Invalid(String),
}

/// Docker's rule: `^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$`.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    let n = name.strip_prefix('/').unwrap_or(name);
    let b = n.as_bytes();
    let ok = b.len() >= 2
        && b[0].is_ascii_alphanumeric()
        && b[1..].iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok { Ok(()) } else { Err(NameError::Invalid(name.to_string())) }
}

const LEFT: &[&str] = &[
    "admiring",
    "adoring",
    "affectionate",
    "agitated",
    "amazing",
    "angry",
    "awesome",
    "beautiful",
    "blissful",
    "bold",
    "boring",
    "brave",
    "busy",
    "charming",
    "clever",
    "compassionate",
    "competent",
    "condescending",
    "confident",
    "cool",
    "cranky",
    "crazy",
    "dazzling",
    "determined",
    "distracted",
    "dreamy",
    "eager",
    "ecstatic",
    "elastic",
    "elated",
    "elegant",
    "eloquent",
    "epic",
    "exciting",
    "fervent",
    "festive",
    "flamboyant",
    "focused",
    "friendly",
    "frosty",
    "funny",
    "gallant",
    "gifted",
    "goofy",
    "gracious",
    "great",
    "happy",
    "hardcore",
    "heuristic",
    "hopeful",
    "hungry",
    "infallible",
    "inspiring",
    "intelligent",
    "interesting",
    "jolly",
    "jovial",
    "keen",
    "kind",
    "laughing",
    "loving",
    "lucid",
    "magical",
    "modest",
    "musing",
    "mystifying",
    "naughty",
    "nervous",
    "nice",
    "nifty",
    "nostalgic",
    "objective",
    "optimistic",
    "peaceful",
    "pedantic",
    "pensive",
    "practical",
    "priceless",
    "quirky",
    "quizzical",
    "recursing",
    "relaxed",
    "reverent",
    "romantic",
    "sad",
    "serene",
    "sharp",
    "silly",
    "sleepy",
    "stoic",
    "strange",
    "stupefied",
    "suspicious",
    "sweet",
    "tender",
    "thirsty",
    "trusting",
    "unruffled",
    "upbeat",
    "vibrant",
    "vigilant",
    "vigorous",
    "wizardly",
    "wonderful",
    "xenodochial",
    "youthful",
    "zealous",
    "zen",
];

const RIGHT: &[&str] = &[
    "agnesi",
    "albattani",
    "allen",
    "almeida",
    "archimedes",
    "ardinghelli",
    "aryabhata",
    "austin",
    "babbage",
    "banach",
    "bardeen",
    "bartik",
    "bassi",
    "bell",
    "benz",
    "bhabha",
    "bhaskara",
    "black",
    "blackwell",
    "bohr",
    "booth",
    "borg",
    "bose",
    "boyd",
    "brahmagupta",
    "brattain",
    "brown",
    "carson",
    "cerf",
    "chandrasekhar",
    "chaplygin",
    "chatelet",
    "chaum",
    "clarke",
    "colden",
    "cori",
    "cray",
    "curie",
    "darwin",
    "davinci",
    "dijkstra",
    "dubinsky",
    "easley",
    "edison",
    "einstein",
    "elion",
    "engelbart",
    "euclid",
    "euler",
    "faraday",
    "feistel",
    "fermat",
    "fermi",
    "feynman",
    "franklin",
    "gagarin",
    "galileo",
    "gates",
    "gauss",
    "germain",
    "goldberg",
    "goldstine",
    "goldwasser",
    "goodall",
    "hamilton",
    "hawking",
    "heisenberg",
    "hellman",
    "hermann",
    "herschel",
    "hertz",
    "hodgkin",
    "hofstadter",
    "hoover",
    "hopper",
    "hugle",
    "hypatia",
    "jackson",
    "jang",
    "jemison",
    "jennings",
    "jepsen",
    "johnson",
    "joliot",
    "jones",
    "kalam",
    "kapitsa",
    "kare",
    "keldysh",
    "keller",
    "kepler",
    "khorana",
    "kilby",
    "kirch",
    "knuth",
    "kowalevski",
    "lalande",
    "lamarr",
    "lamport",
    "leakey",
    "leavitt",
    "lederberg",
    "lehmann",
    "lewin",
    "lichterman",
    "liskov",
    "lovelace",
    "lumiere",
    "mahavira",
    "margulis",
    "matsumoto",
    "maxwell",
    "mayer",
    "mccarthy",
    "mcclintock",
    "mclean",
    "mcnulty",
    "meitner",
    "mendel",
    "mendeleev",
    "merkle",
    "mestorf",
    "mirzakhani",
    "morse",
    "moser",
    "murdock",
    "napier",
    "nash",
    "neumann",
    "newton",
    "nightingale",
    "nobel",
    "noether",
    "northcutt",
    "noyce",
    "panini",
    "pare",
    "pascal",
    "pasteur",
    "payne",
    "perlman",
    "pike",
    "poincare",
    "poitras",
    "ptolemy",
    "raman",
    "ramanujan",
    "ride",
    "ritchie",
    "robinson",
    "roentgen",
    "rosalind",
    "rubin",
    "saha",
    "sammet",
    "shamir",
    "shannon",
    "shaw",
    "shirley",
    "shockley",
    "sinoussi",
    "snyder",
    "spence",
    "stonebraker",
    "sutherland",
    "swanson",
    "swartz",
    "swirles",
    "taussig",
    "tesla",
    "tharp",
    "thompson",
    "torvalds",
    "turing",
    "varahamihira",
    "vaughan",
    "villani",
    "visvesvaraya",
    "volhard",
    "wescoff",
    "wiles",
    "williams",
    "wilson",
    "wing",
    "wozniak",
    "wright",
    "wu",
    "yalow",
    "yonath",
    "zhukovsky",
];

/// A Docker-style `adjective_surname` not taken yet (never `boring_wozniak`, as Docker); after
/// a few collisions a digit is appended, as Docker does on retry.
pub fn random_name(taken: impl Fn(&str) -> bool) -> String {
    let mut rng = rand::rng();
    for attempt in 0..1000 {
        let l = LEFT[rng.random_range(0..LEFT.len())];
        let r = RIGHT[rng.random_range(0..RIGHT.len())];
        let mut name = format!("{l}_{r}");
        if name == "boring_wozniak" {
            continue;
        }
        if attempt >= 3 {
            name.push_str(&rng.random_range(0..10).to_string());
        }
        if !taken(&name) {
            return name;
        }
    }
    format!("netd_{}", &new_id()[..12])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolveError {
    NotFound,
    Ambiguous,
}

/// Docker's lookup order: full id, exact name (with or without `/`), unique id prefix.
pub fn resolve<'a>(r: &str, objs: &[(&'a str, &'a str)]) -> Result<&'a str, ResolveError> {
    if r.is_empty() {
        return Err(ResolveError::NotFound);
    }
    if let Some((id, _)) = objs.iter().find(|(id, _)| *id == r) {
        return Ok(id);
    }
    let name = r.strip_prefix('/').unwrap_or(r);
    if let Some((id, _)) = objs.iter().find(|(_, n)| *n == name) {
        return Ok(id);
    }
    let m: Vec<&&str> = objs.iter().map(|(id, _)| id).filter(|id| id.starts_with(r)).collect();
    match m.len() {
        0 => Err(ResolveError::NotFound),
        1 => Ok(m[0]),
        _ => Err(ResolveError::Ambiguous),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex() {
        let a = new_id();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, new_id());
    }

    #[test]
    fn names_follow_dockers_rule() {
        for ok in ["web", "/web", "a1", "my_app.v2-x"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["a", "_x", "-x", "a/b", "a b", "..", "x..y/", ""] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert_eq!(
            validate_name("a b").unwrap_err().to_string(),
            "Invalid container name (a b), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        );
        let n = random_name(|_| false);
        let (l, r) = n.split_once('_').unwrap();
        assert!(LEFT.contains(&l) && RIGHT.contains(&r), "{n}");
        let n = random_name(|n| !n.chars().last().unwrap().is_ascii_digit());
        assert!(n.chars().last().unwrap().is_ascii_digit(), "retries append a digit: {n}");
    }

    #[test]
    fn resolution_order() {
        let objs = [("abc123", "web"), ("abd456", "db"), ("web", "other")];
        assert_eq!(resolve("abc123", &objs), Ok("abc123"));
        assert_eq!(resolve("web", &objs), Ok("web"), "a full id wins over a name");
        assert_eq!(resolve("/db", &objs), Ok("abd456"));
        assert_eq!(resolve("abc", &objs), Ok("abc123"));
        assert_eq!(resolve("ab", &objs), Err(ResolveError::Ambiguous));
        assert_eq!(resolve("zzz", &objs), Err(ResolveError::NotFound));
    }
}

/// Property tests: Docker's name rule, exactly, on arbitrary strings.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    /// The rule written independently of `validate_name`.
    fn docker_rule(s: &str) -> bool {
        let s = s.strip_prefix('/').unwrap_or(s);
        let mut cs = s.chars();
        matches!(cs.next(), Some(c) if c.is_ascii_alphanumeric())
            && !cs.as_str().is_empty()
            && cs.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn arbitrary_strings_follow_dockers_rule(
            s in prop_oneof![
                any::<String>(),
                "/?[a-zA-Z0-9_. /:-]{0,12}",
                "[a-z]{0,3}[\\x00-\\x7f\\u{80}-\\u{10ffff}][a-z]{0,3}",
            ]
        ) {
            let r = validate_name(&s);
            prop_assert_eq!(r.is_ok(), docker_rule(&s), "{:?}", s);
            if let Err(e) = r {
                prop_assert_eq!(
                    e.to_string(),
                    format!("Invalid container name ({s}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
                );
            }
        }

        #[test]
        fn valid_names_are_accepted(s in "/?[a-zA-Z0-9][a-zA-Z0-9_.-]{1,300}") {
            prop_assert!(validate_name(&s).is_ok(), "{s:?}");
        }

        #[test]
        fn one_bad_character_rejects(
            pre in "[a-zA-Z0-9][a-zA-Z0-9_.-]{0,8}",
            bad in "[^a-zA-Z0-9_.-]",
            post in "[a-zA-Z0-9_.-]{0,8}",
        ) {
            let s = format!("{pre}{bad}{post}");
            prop_assert!(validate_name(&s).is_err(), "{s:?}");
        }
    }
}
