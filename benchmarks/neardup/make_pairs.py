"""Generate the Korean near-duplicate benchmark: labelled pairs of whole instruction rows.

    python benchmarks/neardup/make_pairs.py            # writes benchmarks/neardup/pairs.jsonl
    python benchmarks/neardup/make_pairs.py --seed 7 -o /tmp/pairs.jsonl

Standard library only, deterministic for a seed. Every line is one pair::

    {"pair": "test-0012", "split": "test", "domain": "law", "template": "law.ask",
     "label": "dup" | "keep", "kind": "spacing" | ... ,
     "a": {"id", "instruction", "input", "output", "example"}, "b": {...}}

`a` is the row seen first; a dedup rule is right on a pair when it removes `b` for a `dup`
pair and keeps both rows of a `keep` pair. `example` names the example a row is a version of
(template and slot; a row with another answer is its own example): over all the rows of a
split, a removal is wrong exactly when the removed row and its kept twin name different
examples.

What counts as the same example (the labels)
--------------------------------------------
Two rows are duplicates when a reader would call them one training example: the same request
about the same thing with the same answer. Positive kinds (label ``dup``):

* ``particle-ending``  particles and endings changed (은/는, 이/가, 을/를 dropped or swapped,
  -나요/-ㅂ니까/-가?),
* ``honorific``        speech level changed (주세요 -> 줘, 하세요 -> 해, 하십시오),
* ``spacing``          spaces removed or added inside the prompt,
* ``typo``             typos and jamo errors (a vowel or final consonant changed, a syllable
  doubled or two syllables swapped),
* ``word-order``       two phrases of the request swapped,
* ``synonym``          words replaced by synonyms (방법 -> 법, 알려 -> 가르쳐, 무엇 -> 뭐),
* ``paraphrase``       the request written another way by hand (same slots, same answer),
* ``framing``          politeness or framing added ("질문입니다.", "다음에 답하세요:"),
* ``number-entity-format`` the SAME number or entity written another way (1,000 -> 1000,
  10% -> 10퍼센트, 서울 -> 서울특별시, 파이썬 -> Python): the task and its answer stay.
  A different number or entity is a different example (see the negatives), so this is
  the only reading of "number or entity changes that keep the task" that does not
  contradict them,
* ``whitespace``       doubled spaces, a line break, trailing blanks, full-width characters.

About 40% of positives also get a light surface edit of the output (spacing, an ending, a
closing sentence): the same answer retyped.

Hard negatives (label ``keep``):

* ``template-topic``   one template on different topics (헌법 제10조 vs 제26조, 김치찌개 vs
  된장찌개),
* ``same-topic-other-request`` the same topic, another request (how to cook X vs X's origin),
* ``other-entity-number`` the same question about another entity or number (서울 vs 부산,
  17 x 23 vs 17 x 32), often with a surface edit on top,
* ``same-prompt-other-output`` the same instruction and input with a different answer
  (another poem, another label, another example sentence).

Split: by domain. Seven domains form ``dev`` and seven others ``test``, so no test text is a
dev text with new numbers; calibrate on dev, report on test.
"""

from __future__ import annotations

import argparse
import json
import random
import unicodedata
from pathlib import Path

HERE = Path(__file__).resolve().parent

# ============================================================================ Korean helpers

_BASE, _JUNG, _JONG = 0xAC00, 21, 28


def has_final(word: str) -> bool:
    """True when the last Hangul syllable of `word` has a final consonant (batchim)."""
    for ch in reversed(word):
        code = ord(ch) - _BASE
        if 0 <= code < 11172:
            return code % _JONG != 0
        if ch.isdigit():
            return ch in "0136780"  # 영, 일, 삼, 육, 칠, 팔, 공: read with a final consonant
        if ch.isalpha():
            return False
    return False


def j(word: str, pair: str) -> str:
    """word + the right particle of pair '은/는', '이/가', '을/를', '과/와', '으로/로'."""
    with_final, without = pair.split("/")
    if pair == "으로/로" and word and (ord(word[-1]) - _BASE) % _JONG == 8:  # ㄹ final takes 로
        return word + without
    return word + (with_final if has_final(word) else without)


def decompose(ch: str):
    code = ord(ch) - _BASE
    if not 0 <= code < 11172:
        return None
    return code // (_JUNG * _JONG), (code % (_JUNG * _JONG)) // _JONG, code % _JONG


def compose(cho: int, jung: int, jong: int) -> str:
    return chr(_BASE + (cho * _JUNG + jung) * _JONG + jong)


# ============================================================================ domains
# Each domain: entities (dicts) and templates. A template has several hand-written forms of
# the request (paraphrases) and an answer built from the entity.

LAW = [  # 대한민국 헌법 제1조 ~ 제39조 (요지)
    (1, "대한민국이 민주공화국이며 주권이 국민에게 있다는 것"), (2, "대한민국 국민이 되는 요건을 법률로 정한다는 것"),
    (3, "대한민국의 영토가 한반도와 그 부속도서라는 것"), (4, "평화적 통일 정책을 수립하고 추진한다는 것"),
    (5, "침략적 전쟁을 부인하고 국군의 정치적 중립을 지킨다는 것"), (6, "조약과 국제법규가 국내법과 같은 효력을 가진다는 것"),
    (7, "공무원이 국민 전체에 대한 봉사자라는 것"), (8, "정당 설립의 자유와 복수정당제를 보장한다는 것"),
    (9, "국가가 전통문화의 계승과 민족문화의 창달에 노력한다는 것"), (10, "인간의 존엄과 가치 및 행복추구권"),
    (11, "법 앞의 평등과 차별 금지"), (12, "신체의 자유와 적법절차"), (13, "형벌불소급과 이중처벌 금지"),
    (14, "거주와 이전의 자유"), (15, "직업선택의 자유"), (16, "주거의 자유와 영장주의"), (17, "사생활의 비밀과 자유"),
    (18, "통신의 비밀"), (19, "양심의 자유"), (20, "종교의 자유와 정교분리"), (21, "언론·출판·집회·결사의 자유"),
    (22, "학문과 예술의 자유"), (23, "재산권 보장과 정당한 보상"), (24, "선거권"), (25, "공무담임권"), (26, "청원권"),
    (27, "재판을 받을 권리"), (28, "형사보상청구권"), (29, "국가배상청구권"), (30, "범죄피해자 구조청구권"),
    (31, "교육을 받을 권리와 의무교육"), (32, "근로의 권리와 최저임금제"), (33, "근로자의 단결권·단체교섭권·단체행동권"),
    (34, "인간다운 생활을 할 권리와 사회보장"), (35, "환경권"), (36, "혼인과 가족생활, 모성 보호와 보건"),
    (37, "기본권 제한의 한계와 본질적 내용 침해 금지"), (38, "납세의 의무"), (39, "국방의 의무"),
]


def law_entities():
    return [{"n": n, "what": what} for n, what in LAW]


def law_templates():
    def ask(e):
        forms = [f"헌법 제{e['n']}조는 무엇을 규정하나요?", f"대한민국 헌법 제{e['n']}조의 내용을 설명해 주세요.",
                 f"헌법 {e['n']}조에는 어떤 내용이 담겨 있는지 알려 주세요."]
        out = f"헌법 제{e['n']}조는 {e['what']}에 관한 조항입니다. 이 조항은 국가 권력의 행사 기준이 됩니다."
        return forms, "", out

    def case(e):
        forms = [f"헌법 제{e['n']}조가 실제 사건에서 어떻게 적용되는지 예를 들어 주세요.",
                 f"헌법 제{e['n']}조의 적용 사례를 하나 들어 설명하세요."]
        out = (f"예를 들어 {e['what']}이(가) 문제된 사건에서 헌법재판소는 제{e['n']}조를 심사 기준으로 삼아 "
               "법률이 과도한 제한인지 판단했습니다.")
        return forms, "", out

    def history(e):
        forms = [f"헌법 제{e['n']}조는 언제 지금의 모습이 되었나요?", f"현행 헌법 제{e['n']}조가 생긴 시기를 알려 주세요."]
        out = f"현행 헌법 제{e['n']}조({e['what']})는 1987년 제9차 개정 헌법에서 지금의 문언이 되었습니다."
        return forms, "", out

    return {"law.ask": ask, "law.case": case, "law.history": history}


TAXES = [
    {"tax": "부가가치세", "payer": "재화나 용역을 공급하는 사업자", "when": "1월과 7월", "rate": "10%", "base": "공급가액"},
    {"tax": "종합소득세", "payer": "종합소득이 있는 개인", "when": "5월", "rate": "6%에서 45%", "base": "종합소득 과세표준"},
    {"tax": "법인세", "payer": "법인", "when": "사업연도 종료 후 3개월 이내", "rate": "9%에서 24%", "base": "각 사업연도 소득"},
    {"tax": "양도소득세", "payer": "부동산 등을 양도한 개인", "when": "양도한 달의 말일부터 2개월 이내", "rate": "보유 기간에 따라 6%에서 70%", "base": "양도차익"},
    {"tax": "상속세", "payer": "상속인", "when": "상속개시일이 속한 달의 말일부터 6개월 이내", "rate": "10%에서 50%", "base": "상속재산가액"},
    {"tax": "증여세", "payer": "재산을 증여받은 사람", "when": "증여받은 달의 말일부터 3개월 이내", "rate": "10%에서 50%", "base": "증여재산가액"},
    {"tax": "취득세", "payer": "부동산이나 차량을 취득한 사람", "when": "취득일부터 60일 이내", "rate": "물건에 따라 1%에서 12%", "base": "취득가액"},
    {"tax": "재산세", "payer": "6월 1일 현재 재산 소유자", "when": "7월과 9월", "rate": "0.1%에서 0.4%", "base": "시가표준액"},
    {"tax": "종합부동산세", "payer": "공시가격 합계가 기준을 넘는 주택 소유자", "when": "12월", "rate": "0.5%에서 5%", "base": "공시가격 합계에서 공제액을 뺀 금액"},
    {"tax": "자동차세", "payer": "자동차 소유자", "when": "6월과 12월", "rate": "배기량에 따라 cc당 18원에서 200원", "base": "배기량"},
    {"tax": "인지세", "payer": "과세문서를 작성한 사람", "when": "문서 작성 시", "rate": "문서 종류에 따라 정액", "base": "문서의 기재금액"},
    {"tax": "개별소비세", "payer": "과세물품을 제조하거나 반출하는 사람", "when": "분기 종료 다음 달 25일까지", "rate": "물품에 따라 5%에서 20%", "base": "반출가격"},
    {"tax": "주민세", "payer": "지방자치단체에 주소를 둔 개인과 사업소", "when": "8월", "rate": "지역에 따라 1만원 이내", "base": "균등분"},
    {"tax": "교통·에너지·환경세", "payer": "휘발유와 경유를 제조하거나 수입하는 사람", "when": "매월", "rate": "리터당 정액", "base": "반출 수량"},
]


def tax_templates():
    def deadline(e):
        forms = [f"{j(e['tax'], '은/는')} 언제까지 신고해야 하나요?", f"{e['tax']} 신고 기한을 알려 주세요.",
                 f"{e['tax']}의 신고·납부 기한이 어떻게 되나요?"]
        return forms, "", f"{j(e['tax'], '은/는')} {e['when']}에 신고·납부합니다. 기한을 넘기면 가산세가 붙습니다."

    def payer(e):
        forms = [f"{j(e['tax'], '은/는')} 누가 내야 하나요?", f"{e['tax']}의 납세의무자는 누구인가요?",
                 f"{j(e['tax'], '을/를')} 내는 사람이 누구인지 설명해 주세요."]
        return forms, "", f"{e['tax']}의 납세의무자는 {e['payer']}입니다."

    def rate(e):
        forms = [f"{e['tax']}의 세율은 얼마인가요?", f"{e['tax']} 세율을 알려 주세요.", f"{j(e['tax'], '은/는')} 몇 퍼센트를 내나요?"]
        return forms, "", f"{e['tax']}의 세율은 {e['rate']}이며 과세표준은 {e['base']}입니다."

    return {"tax.deadline": deadline, "tax.payer": payer, "tax.rate": rate}


DISHES = [
    {"dish": "김치찌개", "main": "잘 익은 김치와 돼지고기", "key": "김치와 고기를 먼저 볶은 뒤 물을 붓고 20분 끓입니다", "origin": "김치를 오래 두고 먹던 겨울철 가정식에서"},
    {"dish": "된장찌개", "main": "된장, 두부, 애호박", "key": "멸치 육수에 된장을 풀고 채소와 두부를 넣어 끓입니다", "origin": "장을 담가 먹던 농가의 밥상에서"},
    {"dish": "불고기", "main": "얇게 썬 소고기와 간장 양념", "key": "간장, 설탕, 배즙에 고기를 30분 재운 뒤 센 불에 굽습니다", "origin": "고구려의 맥적에서"},
    {"dish": "잡채", "main": "당면, 시금치, 당근, 소고기", "key": "재료를 따로 볶고 삶은 당면과 간장 양념에 버무립니다", "origin": "조선 광해군 때의 궁중 음식에서"},
    {"dish": "비빔밥", "main": "밥, 여러 가지 나물, 고추장", "key": "나물을 각각 무쳐 밥 위에 올리고 고추장과 참기름을 넣어 비빕니다", "origin": "제사 뒤 음식을 나누어 먹던 풍습에서"},
    {"dish": "떡볶이", "main": "가래떡, 어묵, 고추장", "key": "고추장과 설탕을 푼 물에 떡과 어묵을 넣고 졸입니다", "origin": "간장으로 볶던 궁중 떡볶이에서"},
    {"dish": "미역국", "main": "불린 미역과 소고기", "key": "참기름에 소고기와 미역을 볶고 물을 부어 오래 끓입니다", "origin": "산모에게 먹이던 풍습에서"},
    {"dish": "갈비찜", "main": "소갈비, 무, 당근, 밤", "key": "핏물을 뺀 갈비를 데친 뒤 양념과 채소를 넣고 약한 불에 1시간 조립니다", "origin": "잔칫날 상에 오르던 음식에서"},
    {"dish": "순두부찌개", "main": "순두부, 바지락, 고춧가루", "key": "고추기름에 양념을 볶고 육수와 순두부를 넣어 끓인 뒤 달걀을 올립니다", "origin": "강릉 초당 마을의 두부에서"},
    {"dish": "김밥", "main": "김, 밥, 단무지, 시금치, 달걀", "key": "간한 밥을 김 위에 펴고 속재료를 올려 단단히 맙니다", "origin": "김에 밥을 싸 먹던 복쌈에서"},
    {"dish": "계란말이", "main": "달걀, 대파, 당근", "key": "달걀물을 얇게 부어 익으면 돌돌 말기를 반복합니다", "origin": "도시락 반찬으로 널리 퍼진 가정식에서"},
    {"dish": "부대찌개", "main": "햄, 소시지, 김치, 라면 사리", "key": "재료를 냄비에 돌려 담고 양념장과 육수를 부어 끓입니다", "origin": "전쟁 뒤 의정부 일대의 음식에서"},
    {"dish": "닭갈비", "main": "닭다리살, 양배추, 고구마", "key": "고추장 양념에 재운 닭고기를 채소와 함께 철판에 볶습니다", "origin": "춘천의 선술집 음식에서"},
    {"dish": "해물파전", "main": "쪽파, 오징어, 새우, 부침가루", "key": "반죽 위에 쪽파와 해물을 올리고 기름을 넉넉히 둘러 부칩니다", "origin": "동래 지역의 파전에서"},
    {"dish": "콩나물국", "main": "콩나물, 마늘, 대파", "key": "콩나물을 뚜껑을 덮은 채 끓여 비린내를 막고 소금으로 간합니다", "origin": "해장국으로 먹던 서민 음식에서"},
    {"dish": "삼계탕", "main": "영계, 찹쌀, 인삼, 대추", "key": "닭 속에 찹쌀과 인삼을 넣고 1시간 푹 삶습니다", "origin": "복날 보양식으로 먹던 풍습에서"},
]


def cooking_templates():
    def how(e):
        forms = [f"{j(e['dish'], '을/를')} 맛있게 만드는 방법을 알려 주세요.", f"{e['dish']} 끓이는 법 좀 가르쳐 주세요.",
                 f"집에서 {j(e['dish'], '을/를')} 만들려면 어떻게 해야 하나요?"]
        return forms, "", f"{e['dish']}에는 {e['main']}이(가) 필요합니다. {e['key']}."

    def ingredients(e):
        forms = [f"{e['dish']}에 들어가는 재료는 무엇인가요?", f"{j(e['dish'], '을/를')} 만들 때 필요한 재료를 알려 주세요.",
                 f"{e['dish']} 재료 목록을 정리해 주세요."]
        return forms, "", f"{e['dish']}의 주재료는 {e['main']}입니다. 간은 소금이나 간장으로 맞춥니다."

    def origin(e):
        forms = [f"{e['dish']}의 유래를 알려 주세요.", f"{j(e['dish'], '은/는')} 어디에서 시작된 음식인가요?",
                 f"{e['dish']}의 역사를 간단히 설명해 주세요."]
        return forms, "", f"{j(e['dish'], '은/는')} {e['origin']} 비롯되었다고 알려져 있습니다."

    return {"cooking.how": how, "cooking.ingredients": ingredients, "cooking.origin": origin}


EVENTS = [
    {"ev": "임진왜란", "year": "1592", "what": "일본이 조선을 침략한 전쟁", "who": "이순신", "result": "조선과 명의 연합군이 일본군을 물리쳤습니다"},
    {"ev": "훈민정음 반포", "year": "1446", "what": "세종이 새 문자를 백성에게 알린 일", "who": "세종", "result": "누구나 쉽게 글을 읽고 쓸 길이 열렸습니다"},
    {"ev": "3·1 운동", "year": "1919", "what": "일제의 식민 지배에 맞선 전국적 만세 운동", "who": "민족 대표 33인", "result": "대한민국 임시정부 수립으로 이어졌습니다"},
    {"ev": "광복", "year": "1945", "what": "일제 강점에서 벗어난 일", "who": "독립운동가들", "result": "남북이 나뉘어 군정이 시작되었습니다"},
    {"ev": "한국전쟁", "year": "1950", "what": "남북 사이의 전쟁", "who": "유엔군과 국군", "result": "1953년 정전협정이 맺어졌습니다"},
    {"ev": "병자호란", "year": "1636", "what": "청나라가 조선을 침략한 전쟁", "who": "인조", "result": "조선이 청과 군신 관계를 맺었습니다"},
    {"ev": "갑오개혁", "year": "1894", "what": "신분제 폐지 등 근대적 제도 개혁", "who": "김홍집", "result": "과거제와 신분제가 폐지되었습니다"},
    {"ev": "동학농민운동", "year": "1894", "what": "농민들이 탐관오리와 외세에 맞서 일어난 봉기", "who": "전봉준", "result": "청일전쟁의 계기가 되었습니다"},
    {"ev": "4·19 혁명", "year": "1960", "what": "부정선거에 항의한 시민 혁명", "who": "학생과 시민", "result": "이승만 정부가 물러났습니다"},
    {"ev": "서울 올림픽", "year": "1988", "what": "서울에서 열린 제24회 하계 올림픽", "who": "대한민국 정부", "result": "한국의 국제적 위상이 높아졌습니다"},
    {"ev": "고려 건국", "year": "918", "what": "왕건이 고려를 세운 일", "who": "왕건", "result": "936년 후삼국이 통일되었습니다"},
    {"ev": "조선 건국", "year": "1392", "what": "이성계가 조선을 세운 일", "who": "이성계", "result": "한양으로 도읍을 옮겼습니다"},
    {"ev": "위화도 회군", "year": "1388", "what": "요동 정벌군이 군사를 돌린 일", "who": "이성계", "result": "이성계가 권력을 잡았습니다"},
    {"ev": "강화도 조약", "year": "1876", "what": "조선이 일본과 맺은 불평등 조약", "who": "신헌", "result": "부산 등 세 항구가 개항되었습니다"},
]


def history_templates():
    def when(e):
        forms = [f"{j(e['ev'], '은/는')} 몇 년에 일어났나요?", f"{j(e['ev'], '이/가')} 일어난 해를 알려 주세요.",
                 f"{e['ev']}의 연도가 언제인가요?"]
        return forms, "", f"{j(e['ev'], '은/는')} {e['year']}년에 일어났습니다."

    def what(e):
        forms = [f"{j(e['ev'], '이/가')} 무엇인지 설명해 주세요.", f"{e['ev']}에 대해 간단히 알려 주세요.",
                 f"{j(e['ev'], '이/가')} 어떤 사건이었나요?"]
        return forms, "", f"{j(e['ev'], '은/는')} {e['year']}년 {e['what']}입니다. 그 결과 {e['result']}."

    def who(e):
        forms = [f"{e['ev']}의 중심인물은 누구인가요?", f"{e['ev']}에서 중요한 역할을 한 사람을 알려 주세요."]
        return forms, "", f"{e['ev']}의 중심인물로는 {j(e['who'], '이/가')} 꼽힙니다."

    return {"history.when": when, "history.what": what, "history.who": who}


def math_entities(rng: random.Random, count: int = 40):
    out, seen = [], set()
    while len(out) < count:  # every slot combination once: two entities never ask the same thing
        a, b = rng.randint(12, 99), rng.randint(12, 99)
        price, qty = rng.choice([1200, 1500, 2500, 3000, 4500, 12000, 15000]), rng.randint(2, 9)
        pct = rng.choice([5, 10, 15, 20, 25, 30])
        w, h = rng.randint(3, 30), rng.randint(3, 30)
        keys = {("ab", a, b), ("pq", price, qty), ("pp", price, pct), ("wh", w, h)}
        if keys & seen:
            continue
        seen |= keys
        out.append({"a": a, "b": b, "price": price, "qty": qty, "pct": pct, "w": w, "h": h})
    return out


def won(n: int) -> str:
    return f"{n:,}"


def math_templates():
    def mul(e):
        forms = [f"{e['a']} 곱하기 {e['b']}는 얼마인가요?", f"{e['a']}×{e['b']}를 계산해 주세요.",
                 f"{e['a']}에 {e['b']}를 곱한 값을 구하세요."]
        return forms, "", f"{e['a']} × {e['b']} = {e['a'] * e['b']}입니다."

    def shop(e):
        forms = [f"한 개에 {won(e['price'])}원인 물건을 {e['qty']}개 사면 모두 얼마인가요?",
                 f"{won(e['price'])}원짜리 물건 {e['qty']}개의 총액을 계산해 주세요.",
                 f"개당 {won(e['price'])}원인 물건 {e['qty']}개를 사려면 얼마가 필요한가요?"]
        total = e["price"] * e["qty"]
        return forms, "", f"{won(e['price'])}원 × {e['qty']}개 = {won(total)}원입니다. 모두 {won(total)}원이 필요합니다."

    def discount(e):
        forms = [f"{won(e['price'] * 10)}원짜리 옷을 {e['pct']}% 할인하면 얼마인가요?",
                 f"정가 {won(e['price'] * 10)}원에서 {e['pct']}% 할인한 가격을 구해 주세요."]
        p = e["price"] * 10
        return forms, "", f"할인액은 {won(p * e['pct'] // 100)}원이므로 할인된 가격은 {won(p - p * e['pct'] // 100)}원입니다."

    def area(e):
        forms = [f"가로 {e['w']}cm, 세로 {e['h']}cm인 직사각형의 넓이는?", f"가로가 {e['w']}cm이고 세로가 {e['h']}cm인 직사각형 넓이를 구하세요."]
        return forms, "", f"넓이는 가로 × 세로이므로 {e['w']} × {e['h']} = {e['w'] * e['h']}cm²입니다."

    return {"math.mul": mul, "math.shop": shop, "math.discount": discount, "math.area": area}


SENTENCES = [
    ("저는 매일 아침 공원에서 산책을 합니다.", "I take a walk in the park every morning."),
    ("이 책은 도서관에서 빌렸어요.", "I borrowed this book from the library."),
    ("내일 비가 오면 소풍은 취소됩니다.", "If it rains tomorrow, the picnic will be canceled."),
    ("그는 세 시간 동안 기차를 기다렸다.", "He waited for the train for three hours."),
    ("우리 회사는 작년에 부산으로 이전했습니다.", "Our company moved to Busan last year."),
    ("이 식당은 김치찌개가 유명해요.", "This restaurant is famous for its kimchi stew."),
    ("주말마다 동생과 배드민턴을 칩니다.", "I play badminton with my younger sibling every weekend."),
    ("회의는 오후 두 시에 시작합니다.", "The meeting starts at two in the afternoon."),
    ("창문을 닫아 주시겠어요?", "Could you close the window?"),
    ("그녀는 대학에서 경제학을 전공했다.", "She majored in economics in college."),
    ("시험이 끝나서 정말 기뻐요.", "I am really happy that the exam is over."),
    ("이 길로 가면 역이 나옵니다.", "If you go this way, you will reach the station."),
    ("할머니께서 떡을 만들어 주셨다.", "My grandmother made rice cakes for us."),
    ("휴대폰 배터리가 거의 다 닳았어요.", "My phone battery is almost dead."),
]


def translation_templates():
    def en(e):
        forms = ["다음 문장을 영어로 번역하세요.", "아래 한국어 문장을 영어로 옮겨 주세요.", "다음 문장의 영어 번역을 써 주세요."]
        return forms, e["ko"], e["en"]

    def count(e):
        forms = ["다음 문장의 글자 수를 세어 주세요.", "아래 문장이 몇 글자인지 알려 주세요."]
        words = e["ko"].split()
        return forms, e["ko"], f"공백을 포함하면 {len(e['ko'])}자이고, 단어는 {len(words)}개입니다. 첫 단어는 '{words[0]}'입니다."

    return {"translation.en": en, "translation.count": count}


NEWS = [
    ("국회, 내년도 예산안 본회의 통과", "정치"), ("여야 대표 회담 앞두고 신경전", "정치"), ("대통령, 외교 순방 마치고 귀국", "정치"),
    ("한국은행 기준금리 동결 결정", "경제"), ("반도체 수출 석 달 연속 증가", "경제"), ("원·달러 환율 1,300원대로 상승", "경제"),
    ("국가대표팀, 월드컵 예선 2연승", "스포츠"), ("프로야구 개막전 매진 사례", "스포츠"), ("마라톤 대회에서 한국 신기록 달성", "스포츠"),
    ("새 스마트폰 출시 앞두고 사전 예약 몰려", "IT"), ("인공지능 번역기 정확도 크게 개선", "IT"), ("국산 클라우드 서비스 해외 진출", "IT"),
    ("주말 전국에 비, 기온 뚝", "날씨"), ("올여름 폭염 일수 역대 최다", "날씨"),
]


def topic_templates():
    def label(e):
        forms = ["다음 뉴스 제목의 분야를 정치, 경제, 스포츠, IT, 날씨 중에서 고르세요.", "아래 기사 제목이 어느 분야인지 분류해 주세요.",
                 "다음 제목을 보고 기사 분야를 맞혀 보세요."]
        return forms, e["title"], e["label"]

    return {"topic.label": label}


IDIOMS = [
    ("고진감래", "고생 끝에 즐거움이 온다는 뜻"), ("일석이조", "한 가지 일로 두 가지 이익을 얻는다는 뜻"),
    ("작심삼일", "결심이 사흘을 가지 못한다는 뜻"), ("동문서답", "묻는 말에 엉뚱한 대답을 한다는 뜻"),
    ("우공이산", "꾸준히 노력하면 큰일도 이룬다는 뜻"), ("새옹지마", "인생의 길흉화복은 예측하기 어렵다는 뜻"),
    ("온고지신", "옛것을 익혀 새것을 안다는 뜻"), ("유비무환", "미리 준비하면 걱정이 없다는 뜻"),
    ("역지사지", "처지를 바꾸어 생각해 본다는 뜻"), ("과유불급", "지나침은 모자람과 같다는 뜻"),
    ("십시일반", "여럿이 조금씩 힘을 합치면 한 사람을 돕기 쉽다는 뜻"), ("이심전심", "마음에서 마음으로 뜻이 통한다는 뜻"),
    ("자업자득", "자기가 한 일의 결과를 자기가 받는다는 뜻"), ("청출어람", "제자가 스승보다 나음을 이르는 말"),
]


def idiom_templates():
    def meaning(e):
        forms = [f"사자성어 '{e['w']}'의 뜻을 알려 주세요.", f"'{e['w']}'는 무슨 뜻인가요?", f"{e['w']}라는 말의 의미를 설명해 주세요."]
        return forms, "", f"'{e['w']}'는 {e['m']}입니다."

    def sentence(e):
        forms = [f"'{e['w']}'를 넣어 예문을 하나 만들어 주세요.", f"{e['w']}를 사용한 문장을 지어 주세요."]
        return forms, "", f"예문: 그 일은 그야말로 {e['w']}였다. ({e['m']})"

    return {"idiom.meaning": meaning, "idiom.sentence": sentence}


ECON = [
    {"c": "기준금리", "d": "중앙은행이 정하는 정책 금리", "up": "대출 이자가 오르고 소비가 줄어듭니다"},
    {"c": "인플레이션", "d": "물가가 지속적으로 오르는 현상", "up": "화폐의 구매력이 떨어집니다"},
    {"c": "환율", "d": "두 나라 화폐의 교환 비율", "up": "수입 물가가 오르고 수출 기업은 유리해집니다"},
    {"c": "채권", "d": "돈을 빌리며 발행하는 차용증서", "up": "이미 발행된 채권 가격이 내려갑니다"},
    {"c": "주가지수", "d": "여러 주식 가격을 종합한 지표", "up": "투자 심리가 좋아집니다"},
    {"c": "국내총생산", "d": "한 나라 안에서 생산된 최종 재화와 용역의 가치", "up": "경제가 성장했다고 봅니다"},
    {"c": "예금자보호제도", "d": "금융회사가 파산해도 예금을 일정 한도까지 돌려주는 제도", "up": "보호 한도가 늘면 예금 이동이 줄어듭니다"},
    {"c": "신용점수", "d": "개인의 신용도를 점수로 나타낸 것", "up": "대출 금리가 낮아집니다"},
    {"c": "실업률", "d": "경제활동인구 가운데 실업자의 비율", "up": "소비가 위축됩니다"},
    {"c": "무역수지", "d": "수출액과 수입액의 차이", "up": "외화가 국내로 들어옵니다"},
    {"c": "공매도", "d": "없는 주식을 빌려 파는 거래", "up": "주가 하락 압력이 커질 수 있습니다"},
    {"c": "디플레이션", "d": "물가가 지속적으로 내리는 현상", "up": "소비가 미뤄지고 경기가 나빠집니다"},
]


def econ_templates():
    def define(e):
        forms = [f"{j(e['c'], '이/가')} 무엇인가요?", f"{e['c']}의 개념을 설명해 주세요.", f"경제 용어 {e['c']}에 대해 알려 주세요."]
        return forms, "", f"{j(e['c'], '은/는')} {e['d']}입니다."

    def effect(e):
        forms = [f"{j(e['c'], '이/가')} 오르면 어떤 일이 생기나요?", f"{e['c']} 상승이 경제에 미치는 영향을 알려 주세요."]
        return forms, "", f"{j(e['c'], '이/가')} 오르면 {e['up']}."

    return {"econ.define": define, "econ.effect": effect}


# ------------------------------------------------------------------------- test-split domains

TASKS = [
    {"task": "리스트를 오름차순으로 정렬", "py": "sorted(xs)", "js": "xs.slice().sort((a, b) => a - b)"},
    {"task": "문자열을 거꾸로 뒤집기", "py": "s[::-1]", "js": "s.split('').reverse().join('')"},
    {"task": "리스트에서 최댓값 찾기", "py": "max(xs)", "js": "Math.max(...xs)"},
    {"task": "리스트의 중복 제거", "py": "list(dict.fromkeys(xs))", "js": "[...new Set(xs)]"},
    {"task": "문장의 단어 개수 세기", "py": "len(s.split())", "js": "s.trim().split(/\\s+/).length"},
    {"task": "팩토리얼 계산", "py": "math.factorial(n)", "js": "[...Array(n).keys()].reduce((a, i) => a * (i + 1), 1)"},
    {"task": "짝수만 골라내기", "py": "[x for x in xs if x % 2 == 0]", "js": "xs.filter(x => x % 2 === 0)"},
    {"task": "두 리스트 합치기", "py": "xs + ys", "js": "[...xs, ...ys]"},
    {"task": "딕셔너리를 값 기준으로 정렬", "py": "sorted(d.items(), key=lambda kv: kv[1])", "js": "Object.entries(d).sort((a, b) => a[1] - b[1])"},
    {"task": "문자열을 대문자로 바꾸기", "py": "s.upper()", "js": "s.toUpperCase()"},
    {"task": "리스트의 합계 구하기", "py": "sum(xs)", "js": "xs.reduce((a, b) => a + b, 0)"},
    {"task": "JSON 문자열을 객체로 읽기", "py": "json.loads(s)", "js": "JSON.parse(s)"},
    {"task": "파일의 줄 수 세기", "py": "sum(1 for _ in open(path))", "js": "fs.readFileSync(path, 'utf8').split('\\n').length"},
    {"task": "회문인지 확인하기", "py": "s == s[::-1]", "js": "s === s.split('').reverse().join('')"},
]


def coding_templates():
    def py(e):
        forms = [f"파이썬으로 {e['task']} 코드를 작성하세요.", f"{e['task']}를 파이썬 코드로 짜 주세요.",
                 f"파이썬에서 {e['task']}는 어떻게 하나요? 코드로 보여 주세요."]
        return forms, "", f"파이썬에서는 `{e['py']}`로 {e['task']}를 할 수 있습니다."

    def js(e):
        forms = [f"자바스크립트로 {e['task']} 코드를 작성하세요.", f"{e['task']}를 자바스크립트로 구현해 주세요."]
        return forms, "", f"자바스크립트에서는 `{e['js']}`로 {e['task']}를 할 수 있습니다."

    def explain(e):
        forms = [f"다음 파이썬 코드가 무슨 일을 하는지 설명하세요.", "아래 코드의 동작을 설명해 주세요."]
        return forms, e["py"], f"이 코드는 {e['task']}를 합니다."

    return {"coding.py": py, "coding.js": js, "coding.explain": explain}


ILLNESS = [
    {"x": "감기", "sym": "콧물, 기침, 인후통", "prev": "손을 자주 씻고 충분히 쉽니다", "doc": "고열이 사흘 넘게 이어질 때"},
    {"x": "편두통", "sym": "한쪽 머리가 욱신거리고 빛에 예민해짐", "prev": "규칙적으로 자고 카페인을 줄입니다", "doc": "갑자기 생애 최악의 두통이 올 때"},
    {"x": "불면증", "sym": "잠들기 어렵고 자주 깸", "prev": "같은 시간에 자고 자기 전 화면을 멀리합니다", "doc": "한 달 넘게 낮 생활이 힘들 때"},
    {"x": "위염", "sym": "명치 통증과 속쓰림", "prev": "맵고 짠 음식과 술을 줄입니다", "doc": "검은 변이나 토혈이 있을 때"},
    {"x": "고혈압", "sym": "대개 증상이 없음", "prev": "소금을 줄이고 운동을 합니다", "doc": "혈압이 140/90mmHg 이상으로 반복될 때"},
    {"x": "당뇨병", "sym": "갈증, 잦은 소변, 체중 감소", "prev": "체중을 관리하고 단 음료를 줄입니다", "doc": "공복 혈당이 126mg/dL 이상일 때"},
    {"x": "알레르기 비염", "sym": "재채기, 맑은 콧물, 코막힘", "prev": "원인 물질을 피하고 실내를 자주 환기합니다", "doc": "약을 써도 잠을 못 잘 만큼 심할 때"},
    {"x": "변비", "sym": "배변 횟수가 줄고 변이 딱딱함", "prev": "물과 식이섬유를 충분히 먹습니다", "doc": "혈변이나 체중 감소가 함께 있을 때"},
    {"x": "빈혈", "sym": "어지럼증과 피로, 창백함", "prev": "철분이 많은 음식을 먹습니다", "doc": "숨이 차서 일상생활이 어려울 때"},
    {"x": "요통", "sym": "허리 통증과 뻣뻣함", "prev": "바른 자세를 유지하고 허리 근육을 단련합니다", "doc": "다리 저림이나 마비가 생길 때"},
    {"x": "장염", "sym": "설사, 복통, 구토", "prev": "음식을 익혀 먹고 손을 씻습니다", "doc": "탈수 증상이 나타날 때"},
    {"x": "결막염", "sym": "눈 충혈과 가려움, 눈곱", "prev": "눈을 비비지 않고 수건을 따로 씁니다", "doc": "시력이 떨어지거나 통증이 심할 때"},
    {"x": "대상포진", "sym": "몸 한쪽의 띠 모양 물집과 통증", "prev": "50세 이상은 예방접종을 맞습니다", "doc": "물집이 보이면 바로"},
]


def health_templates():
    def symptoms(e):
        forms = [f"{e['x']}의 증상은 무엇인가요?", f"{j(e['x'], '이/가')} 있으면 어떤 증상이 나타나나요?", f"{e['x']} 증상을 알려 주세요."]
        return forms, "", f"{e['x']}의 대표 증상은 {e['sym']}입니다."

    def prevent(e):
        forms = [f"{j(e['x'], '을/를')} 예방하는 방법을 알려 주세요.", f"{e['x']} 예방법이 궁금합니다.",
                 f"{j(e['x'], '을/를')} 막으려면 어떻게 해야 하나요?"]
        return forms, "", f"{j(e['x'], '을/를')} 예방하려면 {e['prev']}."

    def doctor(e):
        forms = [f"{e['x']} 때문에 병원에 가야 하는 때는 언제인가요?", f"{j(e['x'], '이/가')} 있을 때 언제 진료를 받아야 하나요?"]
        return forms, "", f"{e['x']}은(는) {e['doc']} 진료를 받는 것이 좋습니다."

    return {"health.symptoms": symptoms, "health.prevent": prevent, "health.doctor": doctor}


CITIES = [
    {"city": "서울", "alias": "서울특별시", "pop": 9_400_000, "sight": "경복궁과 남산타워", "region": "수도권"},
    {"city": "부산", "alias": "부산광역시", "pop": 3_300_000, "sight": "해운대와 감천문화마을", "region": "영남"},
    {"city": "대구", "alias": "대구광역시", "pop": 2_370_000, "sight": "팔공산과 서문시장", "region": "영남"},
    {"city": "인천", "alias": "인천광역시", "pop": 3_000_000, "sight": "차이나타운과 월미도", "region": "수도권"},
    {"city": "광주", "alias": "광주광역시", "pop": 1_420_000, "sight": "무등산과 국립아시아문화전당", "region": "호남"},
    {"city": "대전", "alias": "대전광역시", "pop": 1_440_000, "sight": "엑스포과학공원과 유성온천", "region": "충청"},
    {"city": "울산", "alias": "울산광역시", "pop": 1_100_000, "sight": "대왕암공원과 태화강 국가정원", "region": "영남"},
    {"city": "제주", "alias": "제주특별자치도", "pop": 670_000, "sight": "한라산과 성산일출봉", "region": "제주"},
    {"city": "수원", "alias": "수원시", "pop": 1_190_000, "sight": "수원 화성", "region": "수도권"},
    {"city": "전주", "alias": "전주시", "pop": 640_000, "sight": "전주 한옥마을", "region": "호남"},
    {"city": "강릉", "alias": "강릉시", "pop": 210_000, "sight": "경포대와 안목 커피거리", "region": "강원"},
    {"city": "경주", "alias": "경주시", "pop": 250_000, "sight": "불국사와 석굴암", "region": "영남"},
    {"city": "춘천", "alias": "춘천시", "pop": 285_000, "sight": "남이섬과 소양강", "region": "강원"},
    {"city": "여수", "alias": "여수시", "pop": 275_000, "sight": "오동도와 여수 밤바다", "region": "호남"},
]


def geo_templates():
    def pop(e):
        forms = [f"{e['city']}의 인구는 몇 명인가요?", f"{e['city']}에는 사람이 얼마나 사나요?", f"{e['city']} 인구를 알려 주세요."]
        return forms, "", f"{e['city']}의 인구는 약 {e['pop']:,}명입니다."

    def sight(e):
        forms = [f"{e['city']}에서 가 볼 만한 곳을 추천해 주세요.", f"{e['city']}의 유명한 관광지는 어디인가요?",
                 f"{e['city']} 여행 때 꼭 가야 할 곳을 알려 주세요."]
        return forms, "", f"{e['city']}에서는 {e['sight']}을(를) 추천합니다."

    def region(e):
        forms = [f"{j(e['city'], '은/는')} 어느 지역에 속하나요?", f"{e['city']}의 지역 구분을 알려 주세요."]
        return forms, "", f"{j(e['city'], '은/는')} {e['region']} 지역에 속합니다."

    return {"geo.pop": pop, "geo.sight": sight, "geo.region": region}


SCIENCE = [
    {"c": "광합성", "d": "식물이 빛 에너지로 이산화탄소와 물에서 포도당을 만드는 과정", "ex": "나뭇잎이 햇빛을 받아 양분을 만드는 것"},
    {"c": "중력", "d": "질량을 가진 물체끼리 서로 끌어당기는 힘", "ex": "사과가 땅으로 떨어지는 것"},
    {"c": "관성", "d": "물체가 운동 상태를 유지하려는 성질", "ex": "버스가 급정거할 때 몸이 앞으로 쏠리는 것"},
    {"c": "삼투", "d": "물이 반투막을 지나 농도가 높은 쪽으로 이동하는 현상", "ex": "배추를 소금에 절이면 숨이 죽는 것"},
    {"c": "온실 효과", "d": "대기가 지표의 열을 가두어 기온을 높이는 현상", "ex": "이산화탄소가 늘며 지구 기온이 오르는 것"},
    {"c": "산성비", "d": "대기 오염 물질이 녹아 pH가 5.6보다 낮아진 비", "ex": "대리석 조각상이 녹아내리는 것"},
    {"c": "전기 저항", "d": "전류의 흐름을 방해하는 정도", "ex": "가는 전선이 쉽게 뜨거워지는 것"},
    {"c": "화산", "d": "땅속 마그마가 지표로 분출하는 현상", "ex": "한라산이 만들어진 것"},
    {"c": "지진", "d": "지각이 갑자기 움직이며 땅이 흔들리는 현상", "ex": "판의 경계에서 땅이 갈라지는 것"},
    {"c": "DNA", "d": "유전 정보를 담은 이중 나선 분자", "ex": "부모의 눈 색이 자녀에게 전해지는 것"},
    {"c": "증발", "d": "액체 표면에서 분자가 기체로 바뀌는 현상", "ex": "젖은 빨래가 마르는 것"},
    {"c": "마찰력", "d": "두 물체가 닿은 면에서 운동을 방해하는 힘", "ex": "빙판길에서 미끄러지는 것"},
    {"c": "소화", "d": "음식물을 흡수할 수 있게 잘게 분해하는 과정", "ex": "침 속 아밀레이스가 녹말을 분해하는 것"},
]


def science_templates():
    def define(e):
        forms = [f"{j(e['c'], '이/가')} 무엇인지 설명해 주세요.", f"{e['c']}의 정의를 알려 주세요.", f"과학에서 말하는 {j(e['c'], '은/는')} 무엇인가요?"]
        return forms, "", f"{j(e['c'], '은/는')} {e['d']}입니다."

    def example(e):
        forms = [f"{e['c']}의 예를 들어 주세요.", f"일상에서 볼 수 있는 {e['c']}의 사례를 알려 주세요."]
        return forms, "", f"{e['c']}의 예로는 {e['ex']}을(를) 들 수 있습니다."

    return {"science.define": define, "science.example": example}


REVIEWS = [
    ("배송이 빠르고 포장도 꼼꼼해서 만족합니다.", "긍정"), ("화면이 선명하고 배터리도 오래가요.", "긍정"),
    ("직원분이 친절해서 기분 좋게 식사했어요.", "긍정"), ("가격 대비 품질이 훌륭합니다. 재구매 의사 있어요.", "긍정"),
    ("사이즈가 딱 맞고 디자인도 예뻐요.", "긍정"), ("영화가 지루해서 중간에 나왔습니다.", "부정"),
    ("한 달 만에 고장 나서 너무 실망했어요.", "부정"), ("음식이 식어서 나왔고 양도 적었어요.", "부정"),
    ("설명서와 다른 제품이 와서 환불했습니다.", "부정"), ("소음이 심해서 밤에 잠을 못 잤어요.", "부정"),
    ("향이 은은하고 오래 지속돼서 좋아요.", "긍정"), ("앱이 자꾸 꺼져서 쓸 수가 없네요.", "부정"),
    ("숙소가 깨끗하고 전망이 좋았습니다.", "긍정"), ("상담원 연결이 안 돼서 답답했어요.", "부정"),
]


def sentiment_templates():
    def label(e):
        forms = ["다음 리뷰의 감정을 긍정 또는 부정으로 분류하세요.", "아래 후기가 긍정적인지 부정적인지 판단해 주세요.",
                 "다음 상품평의 감성을 긍정/부정 중 하나로 답하세요."]
        return forms, e["text"], e["label"]

    return {"sentiment.label": label}


PASSAGES = [
    ("한강은 강원도에서 시작해 서울을 지나 서해로 흐른다. 강 주변에는 공원과 자전거 길이 조성되어 시민들의 휴식 공간이 되고 있다.",
     "한강은 서울을 지나 서해로 흐르며 시민의 휴식 공간이 되고 있다."),
    ("최근 재택근무가 늘면서 집에서 일할 공간을 꾸미는 사람이 많아졌다. 책상과 의자 판매량도 함께 증가했다.",
     "재택근무 확산으로 집 업무 공간 꾸미기와 가구 판매가 늘었다."),
    ("전기차 보급이 늘고 있지만 충전소가 부족하다는 지적이 나온다. 정부는 충전소를 두 배로 늘릴 계획이다.",
     "전기차 충전소 부족 지적에 정부가 충전소를 두 배로 늘리기로 했다."),
    ("규칙적인 운동은 심장 건강을 지키고 스트레스를 줄여 준다. 하루 30분 걷기만으로도 효과가 있다.",
     "하루 30분 걷기 같은 규칙적인 운동이 심장 건강과 스트레스 해소에 좋다."),
    ("도서관이 밤 10시까지 문을 열기로 했다. 직장인들도 퇴근 후 책을 빌릴 수 있게 된다.",
     "도서관 운영 시간이 밤 10시까지 늘어 직장인도 퇴근 후 이용할 수 있다."),
    ("올해 벼 수확량은 작년보다 5% 줄었다. 여름철 잦은 비와 일조량 부족이 원인으로 꼽힌다.",
     "잦은 비와 일조량 부족으로 올해 벼 수확량이 5% 줄었다."),
    ("지역 축제에 예상보다 많은 관광객이 몰렸다. 주최 측은 내년에 행사장을 넓힐 예정이다.",
     "지역 축제에 관광객이 몰려 주최 측이 내년 행사장을 넓히기로 했다."),
    ("플라스틱 빨대 사용을 줄이기 위해 종이 빨대를 도입한 카페가 늘고 있다. 다만 쉽게 눅눅해진다는 불만도 있다.",
     "종이 빨대를 쓰는 카페가 늘지만 눅눅해진다는 불만도 있다."),
    ("청소년의 스마트폰 사용 시간이 하루 평균 4시간을 넘었다. 전문가들은 수면 부족을 우려한다.",
     "청소년 스마트폰 사용이 하루 4시간을 넘어 수면 부족이 우려된다."),
    ("새로 개통한 지하철 노선 덕분에 출근 시간이 20분 줄었다는 주민이 많다.",
     "새 지하철 노선으로 주민들의 출근 시간이 20분 줄었다."),
    ("봄철 미세먼지 농도가 높아지면서 마스크 판매가 급증했다. 외출을 자제하라는 권고도 나왔다.",
     "봄철 미세먼지로 마스크 판매가 급증하고 외출 자제 권고가 나왔다."),
    ("한 중소기업이 개발한 번역 앱이 해외에서 100만 건 다운로드를 넘었다.",
     "중소기업의 번역 앱이 해외에서 100만 다운로드를 넘었다."),
]


def summary_templates():
    def one(e):
        forms = ["다음 글을 한 문장으로 요약하세요.", "아래 내용을 한 줄로 요약해 주세요.", "다음 글의 핵심을 한 문장으로 정리해 주세요."]
        return forms, e["text"], e["sum"]

    def title(e):
        forms = ["다음 글에 어울리는 제목을 지어 주세요.", "아래 기사에 알맞은 제목을 붙여 주세요."]
        return forms, e["text"], "제목: " + e["sum"].split(" ")[0] + " 관련 소식"

    return {"summary.one": one, "summary.title": title}


def domains(rng: random.Random):
    """name -> (split, entities, templates)."""
    return {
        # dev
        "tax": ("dev", TAXES, tax_templates()),
        "cooking": ("dev", DISHES, cooking_templates()),
        "history": ("dev", EVENTS, history_templates()),
        "math": ("dev", math_entities(rng), math_templates()),
        "translation": ("dev", [{"ko": k, "en": e} for k, e in SENTENCES], translation_templates()),
        "topic": ("dev", [{"title": t, "label": lab} for t, lab in NEWS], topic_templates()),
        "idiom": ("dev", [{"w": w, "m": m} for w, m in IDIOMS], idiom_templates()),
        "econ": ("dev", ECON, econ_templates()),
        # test
        "law": ("test", law_entities(), law_templates()),
        "coding": ("test", TASKS, coding_templates()),
        "health": ("test", ILLNESS, health_templates()),
        "geo": ("test", CITIES, geo_templates()),
        "science": ("test", SCIENCE, science_templates()),
        "sentiment": ("test", [{"text": t, "label": lab} for t, lab in REVIEWS], sentiment_templates()),
        "summary": ("test", [{"text": t, "sum": s} for t, s in PASSAGES], summary_templates()),
    }


# ============================================================================ edits (positives)

PARTICLE_SWAPS = [("은 ", "는 "), ("는 ", "은 "), ("이 ", "가 "), ("가 ", "이 "), ("을 ", "를 "), ("를 ", "을 "),
                  ("을 ", " "), ("를 ", " "), ("의 ", " "), ("에 대해", "에 관해"), ("에서 ", "서 "), ("으로 ", "로 ")]
ENDING_SWAPS = [("나요?", "ㅂ니까?"), ("인가요?", "입니까?"), ("인가요?", "인지요?"), ("나요?", "는지요?"), ("인가요?", "인가?"),
                ("세요.", "세요"), ("습니다.", "다."), ("하나요?", "합니까?"), ("되나요?", "됩니까?"), ("주세요.", "주십시오."),
                ("있나요?", "있습니까?"), ("인가요?", "이에요?"), ("나요?", "죠?")]
HONORIFIC_SWAPS = [("알려 주세요", "알려 줘"), ("알려 주세요", "알려주라"), ("설명해 주세요", "설명해 줘"), ("설명해 주세요", "설명해 주십시오"),
                   ("주세요", "줘"), ("주세요", "주십시오"), ("하세요", "해"), ("하세요", "하십시오"), ("하세요", "해라"),
                   ("인가요?", "이야?"), ("인가요?", "이니?"), ("나요?", "니?"), ("나요?", "냐?"), ("합니다", "해요"),
                   ("궁금합니다", "궁금해"), ("답하세요", "답해"), ("고르세요", "골라"), ("구하세요", "구해"), ("써 주세요", "써 줘")]
SYNONYMS = [("방법", "법"), ("알려 주세요", "가르쳐 주세요"), ("무엇인가요", "뭔가요"), ("무엇", "뭐"), ("설명해 주세요", "풀어서 말해 주세요"),
            ("만드는", "만들어 먹는"), ("어떻게", "어떤 식으로"), ("작성하세요", "만들어 주세요"), ("요약하세요", "간추려 주세요"),
            ("간단히", "짧게"), ("얼마인가요", "얼마예요"), ("언제", "어느 때"), ("알려", "말해"), ("사람", "이"), ("예를 들어", "예시를 들어"),
            ("추천해 주세요", "소개해 주세요"), ("유명한", "이름난"), ("중요한", "핵심적인"), ("계산해 주세요", "구해 주세요"),
            ("번역하세요", "옮기세요"), ("분류하세요", "구분하세요"), ("판단해 주세요", "가려 주세요"), ("구하세요", "계산하세요"),
            ("증상", "징후"), ("예방하는", "막는"), ("정의", "뜻"), ("사례", "예"), ("인구", "주민 수"),
            ("관광지", "명소"), ("뜻", "의미"), ("연도", "해"), ("유래", "기원")]
FRAMES_BEFORE = ["질문입니다. ", "다음에 답하세요: ", "다음 질문에 답하세요.\n", "궁금한 게 있어요. ", "[질문] ", "Q: ", "안녕하세요. ",
                 "질문 하나 드릴게요. ", "다음 물음에 답하시오. "]
FRAMES_AFTER = [" 감사합니다.", " 부탁드립니다.", " 답변 부탁해요.", " 자세히 알려 주시면 감사하겠습니다.", " 미리 감사드려요!"]
ALIASES = [("서울", "서울특별시"), ("부산", "부산광역시"), ("대구", "대구광역시"), ("인천", "인천광역시"), ("광주", "광주광역시"),
           ("대전", "대전광역시"), ("울산", "울산광역시"), ("제주", "제주도"), ("파이썬", "Python"), ("자바스크립트", "JavaScript"),
           ("헌법", "대한민국 헌법"), ("부가가치세", "부가세"), ("종합부동산세", "종부세"), ("국내총생산", "GDP"), ("DNA", "디엔에이"),
           ("이순신", "이순신 장군"), ("세종", "세종대왕"), ("한국은행", "한은"), ("IT", "정보기술"), ("cm", "센티미터")]


def _apply_one(text: str, swaps, rng: random.Random) -> str | None:
    options = [(a, b) for a, b in swaps if a in text]
    if not options:
        return None
    a, b = rng.choice(options)
    # replace one occurrence (a random one)
    spots = [i for i in range(len(text)) if text.startswith(a, i)]
    at = rng.choice(spots)
    return text[:at] + b + text[at + len(a):]


def _apply_some(text: str, swaps, rng: random.Random, times: int) -> str | None:
    out, changed = text, False
    for _ in range(times):
        new = _apply_one(out, swaps, rng)
        if new is not None and new != out:
            out, changed = new, True
    return out if changed else None


def _ending_fix(text: str) -> str:
    # "ㅂ니까" written after a vowel-final stem: 하나요 -> 합니까 etc. are listed whole; a bare
    # jamo ㅂ is folded into the previous syllable when it has no final consonant.
    out = []
    for ch in text:
        if ch == "ㅂ" and out:
            parts = decompose(out[-1])
            if parts and parts[2] == 0:
                out[-1] = compose(parts[0], parts[1], 17)
                continue
        out.append(ch)
    return "".join(out).replace("ㅂ", "")


def edit_particle(text, rng):
    new = _apply_some(text, PARTICLE_SWAPS + ENDING_SWAPS, rng, rng.randint(1, 2))
    return _ending_fix(new) if new else None


def edit_honorific(text, rng):
    return _apply_some(text, HONORIFIC_SWAPS, rng, rng.randint(1, 2))


def edit_spacing(text, rng):
    spaces = [i for i, c in enumerate(text) if c == " "]
    if len(spaces) < 2:
        return None
    out = list(text)
    if rng.random() < 0.6:  # remove 1-3 spaces
        for i in sorted(rng.sample(spaces, min(len(spaces), rng.randint(1, 3))), reverse=True):
            del out[i]
    else:  # add a space inside 1-2 words
        for _ in range(rng.randint(1, 2)):
            inner = [i for i in range(1, len(out)) if out[i] != " " and out[i - 1] != " " and decompose(out[i])]
            if inner:
                out.insert(rng.choice(inner), " ")
    new = "".join(out)
    return new if new != text else None


def edit_typo(text, rng):
    hangul = [i for i, c in enumerate(text) if decompose(c)]
    if len(hangul) < 4:
        return None
    out = list(text)
    for _ in range(rng.randint(1, 2)):
        i = rng.choice(hangul)
        cho, jung, jong = decompose(out[i])
        op = rng.random()
        if op < 0.35:  # vowel slip (ㅐ/ㅔ, ㅗ/ㅓ, ㅡ/ㅜ ...)
            near = {1: 5, 5: 1, 8: 4, 4: 8, 18: 13, 13: 18, 0: 4, 20: 18, 2: 6, 6: 2}
            out[i] = compose(cho, near.get(jung, (jung + 1) % _JUNG), jong)
        elif op < 0.6:  # final consonant added or dropped
            out[i] = compose(cho, jung, 0 if jong else rng.choice([4, 8, 16, 21]))
        elif op < 0.8 and i + 1 < len(out) and decompose(out[i + 1]):  # two syllables swapped
            out[i], out[i + 1] = out[i + 1], out[i]
        else:  # a syllable doubled
            out.insert(i, out[i])
            hangul = [k for k, c in enumerate(out) if decompose(c)]
    new = "".join(out)
    return new if new != text else None


def edit_word_order(text, rng):
    words = text.split(" ")
    if len(words) < 4:
        return None
    i = rng.randrange(0, len(words) - 2)  # never moves the final predicate
    words[i], words[i + 1] = words[i + 1], words[i]
    new = " ".join(words)
    return new if new != text else None


def edit_synonym(text, rng):
    return _apply_some(text, SYNONYMS, rng, rng.randint(1, 2))


def edit_framing(text, rng):
    if rng.random() < 0.65:
        return rng.choice(FRAMES_BEFORE) + text
    return text + rng.choice(FRAMES_AFTER)


def edit_number_entity(text, rng):
    import re

    moves = []
    for m in re.finditer(r"\d{1,3}(?:,\d{3})+", text):
        moves.append((m.start(), m.end(), m.group().replace(",", "")))
    for m in re.finditer(r"(?<![\d,])\d{4,}(?![\d,])", text):
        moves.append((m.start(), m.end(), f"{int(m.group()):,}"))
    for m in re.finditer(r"(\d+)%", text):
        moves.append((m.start(), m.end(), m.group(1) + rng.choice(["퍼센트", " 퍼센트", "프로"])))
    for m in re.finditer(r"(\d+)년", text):
        moves.append((m.start(), m.end(), m.group(1) + " 년"))
    for a, b in ALIASES:
        for m in re.finditer(re.escape(a), text):
            if text[m.end():m.end() + len(b) - len(a)] != b[len(a):]:
                moves.append((m.start(), m.end(), b))
    if not moves:
        return None
    start, end, new = rng.choice(moves)
    return text[:start] + new + text[end:]


def edit_whitespace(text, rng):
    spaces = [i for i, c in enumerate(text) if c == " "]
    op = rng.random()
    if spaces and op < 0.5:
        out = list(text)
        for i in sorted(rng.sample(spaces, min(len(spaces), rng.randint(1, 3))), reverse=True):
            out[i] = rng.choice(["  ", "   ", "\t"])
        return "".join(out)
    if spaces and op < 0.7:
        i = rng.choice(spaces)
        return text[:i] + "\n" + text[i + 1:]
    if op < 0.85:
        return "  " + text + "  \n"
    # full-width ASCII / punctuation (NFKC folds them back)
    new = "".join(unicodedata.normalize("NFKC", c) != c and c or (chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c) for c in text)
    return new if new != text else text.replace(" ", "\u3000", 1)


EDITS = {
    "particle-ending": edit_particle, "honorific": edit_honorific, "spacing": edit_spacing, "typo": edit_typo,
    "word-order": edit_word_order, "synonym": edit_synonym, "framing": edit_framing,
    "number-entity-format": edit_number_entity, "whitespace": edit_whitespace,
}
POSITIVE_KINDS = [*EDITS, "paraphrase"]
NEGATIVE_KINDS = ["template-topic", "same-topic-other-request", "other-entity-number", "same-prompt-other-output"]
LIGHT_OUTPUT_EDITS = [edit_spacing, edit_whitespace, lambda t, r: t + r.choice([" 도움이 되었길 바랍니다.", " 참고하세요."]),
                      lambda t, r: _apply_some(t, [("입니다.", "이에요."), ("습니다.", "어요."), ("합니다.", "해요.")], r, 1)]

#: Entities that differ by one slot of the same question (other-entity-number): these templates
#: ask about a number or a named entity, not a topic.
ENTITY_TEMPLATES = {"math.mul", "math.shop", "math.discount", "math.area", "geo.pop", "geo.region", "history.when", "tax.rate",
                    "tax.deadline", "law.ask", "law.history", "health.symptoms", "econ.define", "translation.en"}


# ============================================================================ pairs


class Builder:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.domains = domains(random.Random(seed + 1))
        self.rows: dict[tuple, dict] = {}
        self.pairs: list[dict] = []

    def row(self, domain: str, template: str, entity_index: int, form: int | None = None, variant: str = "") -> dict:
        """The base row of (template, entity), written in `form` (a paraphrase index)."""
        split, entities, templates = self.domains[domain]
        forms, inp, out = templates[template](entities[entity_index])
        form = form if form is not None else (entity_index * 7 + len(template)) % len(forms)
        key = (template, entity_index, form % len(forms), variant)
        if key not in self.rows:
            self.rows[key] = {"id": f"{template}-{entity_index}-{form % len(forms)}{variant}", "instruction": forms[form % len(forms)],
                              "input": inp, "output": out, "example": f"{template}-{entity_index}"}
        return dict(self.rows[key])

    def n_forms(self, domain, template, entity_index):
        return len(self.domains[domain][2][template](self.domains[domain][1][entity_index])[0])

    def pick(self, split: str, templates_filter=None):
        names = [d for d, (s, _, _) in self.domains.items() if s == split]
        while True:
            domain = self.rng.choice(names)
            templates = [t for t in self.domains[domain][2] if templates_filter is None or t in templates_filter]
            if templates:
                return domain, self.rng.choice(templates), self.rng.randrange(len(self.domains[domain][1]))

    def add(self, split, domain, template, label, kind, a, b):
        self.pairs.append({"pair": f"{split}-{len([p for p in self.pairs if p['split'] == split]):04d}", "split": split,
                           "domain": domain, "template": template, "label": label, "kind": kind, "a": a, "b": b})

    def positive(self, split: str, kind: str) -> bool:
        domain, template, e = self.pick(split)
        a = self.row(domain, template, e)
        if kind == "paraphrase":
            n = self.n_forms(domain, template, e)
            base_form = (e * 7 + len(template)) % n
            if n < 2:
                return False
            b = self.row(domain, template, e, form=(base_form + self.rng.randrange(1, n)) % n)
        else:
            b = dict(a)
            field = "instruction"
            if a["input"] and self.rng.random() < 0.35 and kind not in ("framing", "paraphrase"):
                field = "input"
            new = EDITS[kind](a[field], self.rng)
            if new is None or new == a[field]:
                return False
            b[field] = new
        if self.rng.random() < 0.4:  # the same answer, retyped
            new_out = self.rng.choice(LIGHT_OUTPUT_EDITS)(b["output"], self.rng)
            if new_out:
                b["output"] = new_out
        b["id"] = a["id"] + f"~{kind}-{len(self.pairs)}"
        self.add(split, domain, template, "dup", kind, a, b)
        return True

    def negative(self, split: str, kind: str) -> bool:
        rng = self.rng
        if kind in ("template-topic", "other-entity-number"):
            filt = ENTITY_TEMPLATES if kind == "other-entity-number" else None
            domain, template, e = self.pick(split, filt)
            if kind == "template-topic" and template in ENTITY_TEMPLATES and domain not in ("law",):
                return False  # topics: law articles and templates about a topic (dish, concept, task)
            entities = self.domains[domain][1]
            other = rng.randrange(len(entities))
            if other == e:
                return False
            form = (e * 7 + len(template)) % self.n_forms(domain, template, e)
            a = self.row(domain, template, e)
            b = self.row(domain, template, other, form=form)  # the same wording, another slot
            if kind == "other-entity-number" and rng.random() < 0.5:  # plus a surface edit
                edit = rng.choice([edit_spacing, edit_honorific, edit_framing, edit_whitespace, edit_particle])
                new = edit(b["instruction"], rng)
                if new:
                    b["instruction"] = new
                    b["id"] += f"~edited-{len(self.pairs)}"
        elif kind == "same-topic-other-request":
            domain, template, e = self.pick(split)
            others = [t for t in self.domains[domain][2] if t != template]
            if not others:
                return False
            a = self.row(domain, template, e)
            b = self.row(domain, rng.choice(others), e)
        else:  # same-prompt-other-output
            domain, template, e = self.pick(split)
            a = self.row(domain, template, e)
            b = dict(a)
            b["output"] = self.other_output(domain, template, e, a)
            if b["output"] is None or b["output"] == a["output"]:
                return False
            b["id"] = a["id"] + f"~other-output-{len(self.pairs)}"
            b["example"] = b["id"]  # another answer: another example
        fold = lambda r, k: " ".join(r[k].split())  # noqa: E731
        if a["id"] == b["id"] or (fold(a, "output") == fold(b, "output") and (not a["input"] or fold(a, "input") == fold(b, "input"))):
            return False  # two different examples: another answer, or another input (math slots can repeat)
        self.add(split, domain, template, "keep", kind, a, b)
        return True

    def other_output(self, domain, template, e, a) -> str | None:
        """Another answer to the same prompt: another entity's answer of the same template, or a
        label flip / a different example, with the row's own words where the answer names them."""
        rng = self.rng
        entities = self.domains[domain][1]
        label_sets = {"sentiment": ["긍정", "부정", "중립"], "topic": ["정치", "경제", "스포츠", "IT", "날씨"]}
        if domain in label_sets:
            return rng.choice([x for x in label_sets[domain] if x != a["output"]])
        choices = [
            lambda: self.domains[domain][2][template](entities[(e + rng.randrange(1, len(entities))) % len(entities)])[2],
            lambda: rng.choice(["잘 모르겠습니다. 전문가에게 문의하세요.", "관련 자료를 찾지 못했습니다.", "질문이 모호해서 답하기 어렵습니다. 조금 더 구체적으로 알려 주세요."]),
            lambda: rng.choice(["간단히 말하면, ", "요점만 답하면 "]) + rng.choice(
                ["이 내용은 상황에 따라 다르므로 관련 기관의 최신 안내를 확인해야 합니다.",
                 "여러 견해가 있지만 일반적으로는 기본 원칙부터 확인하는 것이 좋습니다.",
                 "먼저 배경을 이해하고, 다음으로 구체적인 절차를 살펴보세요."]),
        ]
        return rng.choice(choices)()


def build(seed: int = 20261202, positives_per_kind: int = 40, negatives_per_kind: int = 60) -> list[dict]:
    builder = Builder(seed)
    for split in ("dev", "test"):
        for kind in POSITIVE_KINDS:
            made, tries = 0, 0
            while made < positives_per_kind and tries < 5000:
                tries += 1
                made += builder.positive(split, kind)
        for kind in NEGATIVE_KINDS:
            made, tries = 0, 0
            seen = set()
            while made < negatives_per_kind and tries < 5000:
                tries += 1
                before = len(builder.pairs)
                if builder.negative(split, kind):
                    p = builder.pairs[-1]
                    sig = (p["a"]["id"], p["b"]["id"])
                    if sig in seen:
                        builder.pairs.pop()
                        continue
                    seen.add(sig)
                    made += len(builder.pairs) - before
    return builder.pairs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=HERE / "pairs.jsonl")
    parser.add_argument("--seed", type=int, default=20261202)
    args = parser.parse_args(argv)
    pairs = build(args.seed)
    text = "".join(json.dumps(p, ensure_ascii=False, separators=(",", ":")) + "\n" for p in pairs)
    args.output.write_text(text, encoding="utf-8")
    counts: dict[tuple, int] = {}
    for p in pairs:
        counts[(p["split"], p["label"])] = counts.get((p["split"], p["label"]), 0) + 1
    print(f"{args.output}: {len(pairs)} pairs, {len(text.encode()) / 1e6:.2f} MB; "
          + ", ".join(f"{s}/{lab} {n}" for (s, lab), n in sorted(counts.items())))


if __name__ == "__main__":
    main()
