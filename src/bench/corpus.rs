//! The fixed benchmark corpus: short queries (~10 words) and passages (~250 tokens), generated
//! from a fixed word list by a seeded PRNG, so every run, every machine and every anchor script
//! (which reads the `--dump-corpus` JSON) embeds exactly the same texts. Nothing is downloaded.

use serde::Serialize;

/// Common English words, each a single token in BERT's uncased WordPiece vocabulary, so a
/// passage's token count is close to its word count plus punctuation (see the test below).
#[rustfmt::skip]
const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "was", "for", "that", "with", "as", "on", "by", "at",
    "from", "his", "her", "their", "an", "are", "were", "which", "this", "be", "has", "had",
    "it", "not", "but", "after", "also", "first", "new", "two", "one", "time", "year", "years",
    "city", "state", "world", "school", "team", "family", "people", "water", "river", "house",
    "music", "film", "book", "game", "church", "war", "army", "party", "government", "company",
    "system", "history", "season", "league", "album", "song", "station", "line", "road", "area",
    "population", "village", "county", "district", "region", "country", "island", "north",
    "south", "east", "west", "small", "large", "long", "great", "early", "late", "old", "young",
    "public", "local", "national", "international", "military", "political", "social", "human",
    "natural", "general", "special", "major", "several", "many", "most", "other", "same",
    "during", "between", "under", "against", "through", "before", "since", "until", "about",
    "into", "over", "while", "where", "when", "because", "although", "however", "still", "again",
    "built", "named", "known", "played", "released", "published", "founded", "served", "won",
    "became", "made", "used", "called", "moved", "joined", "returned", "received", "including",
    "began", "based", "opened", "closed", "written", "recorded", "produced", "designed",
    "light", "sky", "blue", "green", "red", "black", "white", "sun", "moon", "star", "light",
    "energy", "power", "heat", "air", "rain", "snow", "wind", "fire", "stone", "wood", "iron",
    "gold", "silver", "paper", "glass", "food", "bread", "milk", "coffee", "tea", "garden",
    "tree", "flower", "forest", "mountain", "lake", "sea", "ocean", "coast", "bridge", "tower",
    "street", "market", "bank", "office", "hospital", "university", "library", "museum",
    "theatre", "court", "law", "police", "doctor", "teacher", "student", "child", "children",
    "mother", "father", "brother", "sister", "friend", "king", "queen", "president", "member",
    "group", "club", "band", "player", "coach", "director", "writer", "artist", "author",
    "language", "culture", "science", "research", "study", "theory", "method", "data", "model",
    "computer", "network", "program", "software", "machine", "engine", "car", "train", "ship",
    "plane", "port", "trade", "money", "price", "cost", "value", "market", "industry", "work",
    "job", "life", "death", "health", "disease", "body", "heart", "mind", "idea", "question",
    "answer", "problem", "reason", "result", "example", "order", "form", "part", "number",
    "point", "level", "side", "end", "way", "day", "night", "week", "month", "century", "age",
];

/// Words a query may open with, so queries read like questions.
const QUESTION_WORDS: &[&str] = &["what", "why", "how", "where", "when", "who", "which"];

/// How many texts of each kind the corpus holds: enough for the largest default batch.
pub const N_QUERIES: usize = 1024;
pub const N_PASSAGES: usize = 256;
/// Words per query (the question word included).
pub const QUERY_WORDS: usize = 10;
/// Word-plus-punctuation tokens per passage; with `[CLS]` and `[SEP]` a passage is ~250 tokens.
pub const PASSAGE_TOKENS: usize = 248;

const SEED: u64 = 0x5157_4956_4552_2021; // "QUIVER 2021": any fixed value will do.

/// splitmix64: tiny, well mixed, and the same everywhere.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words[self.below(words.len())]
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Corpus {
    pub queries: Vec<String>,
    pub passages: Vec<String>,
}

impl Corpus {
    /// The corpus. Deterministic: the same texts on every call.
    pub fn fixed() -> Corpus {
        let mut rng = SplitMix64(SEED);
        let queries = (0..N_QUERIES).map(|_| query(&mut rng)).collect();
        let passages = (0..N_PASSAGES).map(|_| passage(&mut rng)).collect();
        Corpus { queries, passages }
    }

    pub fn texts(&self, kind: Kind) -> &[String] {
        match kind {
            Kind::Query => &self.queries,
            Kind::Passage => &self.passages,
        }
    }

    /// JSON for the anchor scripts: `{"queries": [...], "passages": [...]}`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("strings always serialise")
    }
}

/// Which half of the corpus a measurement uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Query,
    Passage,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Query => "query",
            Kind::Passage => "passage",
        }
    }
}

fn query(rng: &mut SplitMix64) -> String {
    let mut words = vec![rng.pick(QUESTION_WORDS)];
    words.extend((1..QUERY_WORDS).map(|_| rng.pick(WORDS)));
    format!("{}?", words.join(" "))
}

/// Sentences of 8 to 20 words, each ending in a full stop (one more token), until the passage
/// holds `PASSAGE_TOKENS` tokens; the last sentence is cut short to land on the count exactly.
fn passage(rng: &mut SplitMix64) -> String {
    let mut out = String::new();
    let mut tokens = 0;
    while tokens < PASSAGE_TOKENS {
        let room = PASSAGE_TOKENS - tokens - 1; // keep one token for the full stop
        let mut len = (8 + rng.below(13)).min(room);
        if room - len == 1 {
            // One token left over would be a sentence of nothing but a full stop.
            len = if len > 1 { len - 1 } else { len + 1 };
        }
        let mut sentence: Vec<String> = (0..len).map(|_| rng.pick(WORDS).to_string()).collect();
        let mut first = sentence[0].chars();
        if let Some(c) = first.next() {
            sentence[0] = c.to_uppercase().chain(first).collect();
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&sentence.join(" "));
        out.push('.');
        tokens += len + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_is_deterministic_and_sized() {
        let a = Corpus::fixed();
        let b = Corpus::fixed();
        assert_eq!(a.queries, b.queries);
        assert_eq!(a.passages, b.passages);
        assert_eq!(a.queries.len(), N_QUERIES);
        assert_eq!(a.passages.len(), N_PASSAGES);
        // Texts differ from each other (the PRNG actually advances).
        assert_ne!(a.queries[0], a.queries[1]);
        assert_ne!(a.passages[0], a.passages[1]);
        for q in &a.queries {
            assert_eq!(q.split(' ').count(), QUERY_WORDS, "{q}");
            assert!(q.ends_with('?'));
        }
        for p in &a.passages {
            let words = p.split(' ').count();
            let stops = p.matches('.').count();
            assert_eq!(words + stops, PASSAGE_TOKENS, "{p}");
        }
    }

    #[test]
    fn corpus_json_round_trips() {
        let c = Corpus::fixed();
        let v: serde_json::Value = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(v["queries"].as_array().unwrap().len(), N_QUERIES);
        assert_eq!(v["passages"][3].as_str().unwrap(), c.passages[3]);
    }

    /// Every word is one WordPiece token of all-minilm's vocabulary, so passages are exactly
    /// `PASSAGE_TOKENS` + [CLS] + [SEP] tokens and queries 10 words + "?" + 2.
    #[test]
    fn token_counts_with_the_real_tokenizer() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/all-minilm-f16.gguf");
        let file = crate::gguf::GgufFile::open(std::path::Path::new(path)).unwrap();
        let tok = crate::tokenizer::from_gguf(&file.header).unwrap();
        for w in WORDS.iter().chain(QUESTION_WORDS) {
            assert_eq!(tok.tokenize(w).len(), 1, "{w:?} is not one token");
        }
        let c = Corpus::fixed();
        for p in &c.passages {
            assert_eq!(tok.encode(p).len(), PASSAGE_TOKENS + 2);
        }
        for q in &c.queries {
            assert_eq!(tok.encode(q).len(), QUERY_WORDS + 3);
        }
    }
}
