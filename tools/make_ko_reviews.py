"""Write src/domaintune/data/ko_reviews.csv, the Korean quickstart's example data (`data.source: ko_reviews`).

    python tools/make_ko_reviews.py            # rewrite the file
    python tools/make_ko_reviews.py --check    # exit 1 if the committed file differs from what this writes

187 product reviews written for domaintune (templated sentences, seeded, not scraped), with 1-5 star
ratings (8 of which contradict their text, as real ones do) and the noise real shop exports carry, so
every cleaning step of `domaintune prepare` has work: HTML tags and entities, exact and near duplicates,
e-mail addresses, phone numbers and URLs to mask, decomposed Hangul (NFD jamo, as macOS exports write
it) that must compose, English rows for the script filter, and malformed rows (extra columns, empty
review, missing or unknown rating, a quote that never closes). tests/test_ko_quickstart.py checks what
prepare makes of each kind.
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import sys
import unicodedata
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "domaintune" / "data" / "ko_reviews.csv"
ROWS = 187
SEED = 7

PRODUCTS = ["무선 이어폰", "텀블러", "운동화", "전기포트", "마스크팩", "보조배터리", "캠핑 의자", "블루투스 스피커",
            "가습기", "백팩", "요가매트", "선크림", "에어프라이어", "머그컵", "우산"]
POSITIVE = {
    "open": ["정말 만족합니다.", "기대 이상이에요!", "완전 강추합니다.", "두 번째 구매예요.", "가성비 최고예요.",
             "선물용으로 샀는데 반응이 좋아요.", "고민하다 샀는데 잘 샀어요.", "이 가격에 이 품질이면 대박이에요.",
             "엄마가 너무 좋아하세요.", "오래 쓸 것 같아요."],
    "aspect": ["배송이 하루 만에 왔어요.", "포장이 꼼꼼하게 되어 있었어요.", "마감이 깔끔하고 튼튼해요.",
               "디자인이 예뻐서 자꾸 보게 돼요.", "생각보다 가볍고 휴대하기 좋아요.", "색상이 사진이랑 똑같아요.",
               "사용법이 간단해서 부모님도 잘 쓰세요.", "소음이 거의 없어요.", "배터리가 오래가요.",
               "사이즈가 딱 맞아요.", "냄새도 없고 세척도 쉬워요.", "판매자분이 친절하게 답해 주셨어요.",
               "매일 쓰는데 아직 멀쩡해요.", "품질이 백화점 제품 못지않아요."],
    "close": ["재구매 의사 있습니다.", "주변에도 추천했어요 ^^", "다음에도 여기서 살게요.", "잘 쓰겠습니다 ㅎㅎ",
              "강력 추천해요♥", "번창하세요!"],
}
NEGATIVE = {
    "open": ["너무 실망했어요.", "돈이 아깝네요.", "별로예요.", "후기 보고 샀는데 후회합니다.", "최악이에요.",
             "기대했는데 아쉽네요.", "이건 아닌 것 같아요.", "불량품을 받았어요."],
    "aspect": ["배송이 일주일이나 걸렸어요.", "박스가 찌그러져서 왔어요.", "한 달 만에 고장났어요.",
               "냄새가 심해서 못 쓰겠어요.", "사진이랑 색상이 완전 달라요.", "마감이 엉망이고 실밥이 튀어나와 있어요.",
               "고객센터는 전화를 안 받아요.", "교환 신청했는데 답이 없어요.", "소음이 너무 커요.",
               "배터리가 금방 닳아요.", "두 번 쓰고 버렸어요.", "설명이랑 크기가 달라요.", "뚜껑이 안 닫혀요."],
    "close": ["환불 요청했습니다.", "비추합니다.", "다른 제품 사세요 ㅠㅠ", "두 번 다시 안 삽니다.",
              "별 하나도 아까워요."],
}
NEUTRAL = {
    "open": ["그냥 그래요.", "가격 생각하면 무난해요.", "보통입니다.", "장단점이 있어요.", "쓸 만은 해요.",
             "기대만큼은 아니지만 괜찮아요.", "평범해요."],
    "close": ["재구매는 고민해 볼게요.", "딱 가격만큼이에요.", "그럭저럭 쓰고 있어요.", "나쁘진 않아요.",
              "좀 더 써 보고 다시 남길게요."],
}
ENGLISH = ["Good product, fast shipping. Would buy again.", "Broke after two days, very disappointed."]
EMAILS = ["kim.minji@example.com", "shop_help@example.co.kr", "parkjh77@example.net", "review.event@example.kr"]
PHONES = ["010-1234-5678", "02-123-4567", "1588-1234", "010 9876 5432"]
URLS = ["https://shop.example.com/item/12345", "www.example.co.kr/event", "http://blog.example.com/review/8",
        "https://example.kr/p?id=77"]


def _compose(rng: random.Random, label: str, product: str, used: set[frozenset]) -> str:
    """One review from 2-4 sentences, sharing at most half its sentences with any earlier review, so that
    the only near duplicates are the ones added on purpose."""
    for _ in range(10_000):
        if label == "positive":
            parts = [rng.choice(POSITIVE["open"]), *rng.sample(POSITIVE["aspect"], rng.randint(1, 2))]
            parts += [f"다만 {rng.choice(NEGATIVE['aspect'])}"] if rng.random() < 0.35 else []  # a fault, still happy
            parts += [rng.choice(POSITIVE["close"])] if rng.random() < 0.6 else []
        elif label == "negative":
            parts = [rng.choice(NEGATIVE["open"]), *rng.sample(NEGATIVE["aspect"], rng.randint(1, 2))]
            parts += [f"물론 {rng.choice(POSITIVE['aspect'])}"] if rng.random() < 0.35 else []  # one good point
            parts += [rng.choice(NEGATIVE["close"])] if rng.random() < 0.6 else []
        else:  # mixed feelings: one good and one bad point
            parts = [rng.choice(NEUTRAL["open"]), rng.choice(POSITIVE["aspect"]), rng.choice(NEGATIVE["aspect"]),
                     rng.choice(NEUTRAL["close"])]
        key = frozenset(parts)
        if all(len(key & other) <= max(len(key), len(other)) // 2 for other in used):
            used.add(key)
            break
    else:
        raise RuntimeError(f"no new {label} review found: the sentence pools are too small")
    text = " ".join(parts)
    if rng.random() < 0.5:
        text = f"{product} {rng.choice(['구매했어요.', '후기 남겨요.', '한 달 써 봤어요.'])} {text}"
    return text


def _rating(rng: random.Random, label: str) -> str:
    return {"positive": rng.choice("45"), "negative": rng.choice("12"), "neutral": "3"}[label]


def build_rows(seed: int = SEED) -> list[list[str]]:
    """Rows of [id, product, rating, review] in file order (CSV-quoted later), noise included."""
    rng = random.Random(seed)
    used: set[frozenset] = set()
    labels = ["positive"] * 73 + ["negative"] * 58 + ["neutral"] * 38
    rng.shuffle(labels)
    products = [rng.choice(PRODUCTS) for _ in labels]
    reviews = [[product, _rating(rng, label), _compose(rng, label, product, used)]
               for product, label in zip(products, labels, strict=True)]
    # Stars that contradict the text, as real exports hold (a slip, or stars for the shop, not the item):
    # no model can get these right, so they set a ceiling below 100%.
    for i in rng.sample(range(len(reviews)), 8):
        reviews[i][1] = {"4": "2", "5": "1", "1": "5", "2": "4", "3": rng.choice("15")}[reviews[i][1]]

    # Noise on clean rows (each row gets at most one kind, so the test can count each kind).
    order = list(range(len(reviews)))
    rng.shuffle(order)
    picks = iter(order)
    # Tags, entities, and text escaped twice (`&amp;quot;`); none of them carries sentiment.
    html = ["<br>", "<b>솔직 후기</b>", "&amp;", "&quot;정품&quot;", "&lt;배송 후기&gt;", "&#39;내돈내산&#39;",
            "&amp;quot;재구매&amp;quot;", "<p>", "&nbsp;"]
    for fragment in html:
        i = next(picks)
        text = reviews[i][2]
        reviews[i][2] = f"{fragment} {text}" if fragment.startswith(("<b", "&lt;")) else f"{text} {fragment}"
    for email in EMAILS:
        i = next(picks)
        reviews[i][2] += f" 문의는 {email} 로 주세요."
    for phone in PHONES:
        i = next(picks)
        reviews[i][2] += f" 매장 번호 {phone}"
    for url in URLS:
        i = next(picks)
        reviews[i][2] += f" 자세한 후기는 {url} 참고"
    for _ in range(10):
        i = next(picks)
        reviews[i][2] = unicodedata.normalize("NFD", reviews[i][2])

    rows = [[f"R{n:04d}", *r] for n, r in enumerate(reviews, start=1)]
    # Exact duplicates (shops export a review twice; spacing may differ) and near duplicates (edited
    # and posted again), each placed after its original.
    plain = [r for r in rows if r[3].isprintable() and unicodedata.is_normalized("NFC", r[3])
             and "<" not in r[3] and "&" not in r[3] and "@" not in r[3] and len(r[3]) >= 40]
    originals = rng.sample(plain, 11)
    extra = []
    for k, original in enumerate(originals):
        copy = list(original)
        copy[0] = f"R{len(rows) + len(extra) + 1:04d}"
        if k < 6:
            copy[3] = copy[3].replace(" ", "  ", 1) if k % 2 else copy[3] + " "
        else:
            copy[3] = copy[3] + " 진짜로요."
        extra.append((rows.index(original), copy))
    for position, copy in sorted(extra, key=lambda e: e[0], reverse=True):
        rows.insert(position + 1 + rng.randint(0, 5), copy)
    n = len(rows)
    rows.insert(rng.randint(0, n), [f"R{n + 1:04d}", "우산", "5", ENGLISH[0]])
    rows.insert(rng.randint(0, n), [f"R{n + 2:04d}", "운동화", "1", ENGLISH[1]])
    return rows


def render(rows: list[list[str]]) -> str:
    """The CSV text; the malformed rows are written raw, as a broken export would hold them."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "product", "rating", "review"])
    writer.writerows(rows)
    n = len(rows)
    malformed = [
        f"R{n + 1:04d},텀블러,5,보온이 잘 돼요, 색도 예뻐요, 또 살게요\n",  # unquoted commas: 6 columns, not 4
        f"R{n + 2:04d},가습기,4,\n",  # empty review
        f"R{n + 3:04d},백팩,,가방이 튼튼하고 수납공간이 많아요.\n",  # rating missing
        f"R{n + 4:04d},머그컵,별로,손잡이가 너무 작아요.\n",  # a rating that is not 1-5
        f"R{n + 5:04d},우산,5,\"바람에도 안 뒤집혀요. 강추\n",  # a quote that never closes (last line)
    ]
    lines = buffer.getvalue().splitlines(keepends=True)
    header, body = lines[0], lines[1:]
    for k, line in enumerate(malformed[:-1]):
        body.insert(40 * (k + 1), line)
    return header + "".join(body) + malformed[-1]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed file instead of writing")
    args = parser.parse_args(argv)
    rows = build_rows()
    text = render(rows)
    records = text.count("\n")  # one line per record: no quoted field spans lines
    assert records - 1 == ROWS, f"{records - 1} rows, expected {ROWS}"
    # A Korean Excel export is cp949: every character must survive that round trip once composed (NFC).
    unicodedata.normalize("NFC", text).encode("cp949")
    if args.check:
        same = OUT.read_text(encoding="utf-8") == text
        print(f"{OUT}: {'up to date' if same else 'differs from tools/make_ko_reviews.py output'}")
        return 0 if same else 1
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT} ({ROWS} rows, {len(text.encode('utf-8'))} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
