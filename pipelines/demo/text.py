"""Word lists, templates and generators behind `nanoforge demo-data` (see pipelines/demo_data.py).

Everything here is written for this project (no copied data) and driven by a `random.Random` passed in, so
the same seed gives the same text. Templates use `{slot}` for a value from a slot list and `[a|b|c]` for an
inline choice; every generated sentence is capitalised and ends with terminal punctuation.

Length (~530 lines): mostly word lists and templates, which are data; each generator is short.
"""

from __future__ import annotations

import ipaddress
import random
import re

NAMES = (
    "Anna Ben Chloe Daniel Ella Farid Grace Hannah Isaac Julia Kofi Laura Marco Nina Omar Priya Rosa Sam Tara "
    "Victor Wen Yusuf Zoe Leo".split()
)
TOWNS = (
    "Millbrook|Ashford|Cedar Falls|Riverton|Hollowell|Bramley|Oakridge|Fairhaven|Kingsbury|Westmere|"
    "Elmstead|Stonebridge|Larkfield|Brookside|Marlow Green".split("|")
)
MONTHS = "January February March April May June July August September October November December".split()
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
SEASONS = "spring summer autumn winter".split()
# topic -> slot -> choices: `things` plural, `place` with article, `activity` a gerund phrase, `tool` with article
TOPICS = {
    "gardening": dict(
        things="tomatoes|runner beans|seedlings|climbing roses|herbs|pepper plants|fruit trees|potatoes",
        place="the greenhouse|the vegetable patch|the back border|the allotment|the raised beds",
        activity="pruning the hedges|sowing seeds indoors|mulching the borders|turning the compost|weeding the paths",
        tool="a sharp pair of secateurs|a good hoe|a rain barrel|a soil thermometer|a sturdy wheelbarrow",
        adj="sheltered|well-drained|sunny|overgrown|shady",
    ),
    "cooking": dict(
        things="soups|stews|fresh noodles|roast vegetables|spice blends|curries|dumplings|pickles",
        place="the kitchen|the pantry|the old stove|the spice shelf|the back porch",
        activity=(
            "making stock from scratch|planning the weekly meals|pickling cucumbers|grinding whole spices|"
            "cooking for a crowd"
        ),
        tool="a heavy cast iron pan|a decent chef's knife|a digital scale|a large stock pot|a pressure cooker",
        adj="cramped|bright|narrow|busy|tidy",
    ),
    "cycling": dict(
        things="gravel routes|tubeless tyres|winter gloves|bike lights|chain lubes|saddle bags|mudguards",
        place="the canal path|the river trail|the hill road|the bike shed|the old railway line",
        activity=(
            "riding to work|cleaning the drivetrain|planning long rides|fixing punctures|climbing the steep lanes"
        ),
        tool="a floor pump|a basic multitool|a torque wrench|a spare inner tube|a repair stand",
        adj="quiet|windy|flat|muddy|sheltered",
    ),
    "hiking": dict(
        things="trail shoes|waterproof jackets|paper maps|walking poles|packed lunches|day packs|wool socks",
        place="the ridge path|the forest trail|the lake shore|the upper valley|the old quarry",
        activity=(
            "walking the coastal path|reading contour lines|planning a hut-to-hut trip|climbing before sunrise|"
            "crossing the moor"
        ),
        tool="a reliable compass|a small first aid kit|a head torch|a lightweight stove|a thermos flask",
        adj="rocky|steep|open|boggy|quiet",
    ),
    "home repair": dict(
        things="leaky taps|squeaky doors|cracked tiles|draughty windows|loose floorboards|old radiators",
        place="the basement|the bathroom|the hallway|the loft|the garage",
        activity=(
            "patching the plaster|sealing the windows|painting the stairwell|replacing the door handles|"
            "insulating the loft"
        ),
        tool="a cordless drill|a good spirit level|a stud finder|a set of chisels|a caulking gun",
        adj="damp|narrow|draughty|dusty|neglected",
    ),
    "photography": dict(
        things="prime lenses|old film cameras|landscape shots|street portraits|tripods|light meters",
        place="the harbour|the market square|the old mill|the woodland edge|the city rooftops",
        activity=(
            "shooting at golden hour|editing the raw files|printing the best frames|developing black and white film|"
            "scouting new locations"
        ),
        tool="a sturdy tripod|a fast fifty|a lens hood|a polarising filter|a spare battery",
        adj="misty|busy|crowded|quiet|foggy",
    ),
    "birdwatching": dict(
        things="garden finches|wading birds|owls|migrating geese|woodpeckers|swallows|kingfishers",
        place="the marsh hide|the estuary|the beech wood|the reservoir|the hedgerows",
        activity=(
            "counting the winter visitors|learning bird calls|keeping a field diary|watching the feeders|"
            "walking the estuary at dawn"
        ),
        tool="a pair of binoculars|a pocket field guide|a spotting scope|a bird feeder|a warm flask of tea",
        adj="misty|windswept|reedy|silent|frozen",
    ),
    "bread baking": dict(
        things="sourdough loaves|bread rolls|rye starters|flatbreads|bagels|seeded loaves",
        place="the warm corner of the kitchen|the bakery counter|the oven shelf|the proving drawer|the kitchen table",
        activity="feeding the starter|shaping the loaves|scoring the dough|proving overnight|milling our own flour",
        tool="a dutch oven|a proving basket|a bench scraper|a baking stone|a dough whisk",
        adj="warm|draughty|humid|chilly|cosy",
    ),
    "woodworking": dict(
        things="dovetail joints|oak offcuts|hand planes|cutting boards|bookshelves|garden benches",
        place="the workshop|the shed|the timber yard|the workbench|the garage corner",
        activity=(
            "sharpening the chisels|cutting mortises by hand|finishing with oil|sanding the tabletop|"
            "building a tool chest"
        ),
        tool="a marking gauge|a sharp block plane|a set of clamps|a combination square|a tenon saw",
        adj="cluttered|dusty|cold|tidy|cramped",
    ),
    "camping": dict(
        things="tents|sleeping bags|camp stoves|folding chairs|cool boxes|tarps|lanterns",
        place="the lakeside pitch|the forest campsite|the meadow|the dunes|the riverbank",
        activity=(
            "pitching the tent in the rain|cooking over the fire|packing the car|planning the weekend trip|"
            "keeping the gear dry"
        ),
        tool="a good mallet|a compact stove|a spare tarp|a warm sleeping mat|a water filter",
        adj="sheltered|exposed|grassy|sandy|muddy",
    ),
}
EN_TEMPLATES = [
    "Last {season}, {name} spent most weekends {activity} near {town}, and the results were better than "
    "anyone expected.",
    "If you are new to this, start with {things} and leave the [more ambitious|bigger] projects for "
    "[later|the second year].",
    "Most beginners underestimate how long {activity} takes, so it is wise to set aside at least {num} hours.",
    "The {adj} spot [near|beside] {place} turned out to be the best [place|home] for {things}.",
    "We asked {name} what [mattered|helped] most, and the answer was simple: patience and {tool}.",
    "There is no single right way to do this, but a few [habits|small routines] make a real difference.",
    "After {num} [weeks|months] of trial and error, we finally found a routine that works for the whole family.",
    "It helps to keep a notebook, because it is easy to forget what you did the [previous|last] {season}.",
    "One reader from {town} wrote in to say that {activity} in the early morning is much more pleasant.",
    "The [local|regional] club in {town} meets every {weekday} evening, and new members are always welcome.",
    "Prices have gone up [a lot|quite a bit] since {year}, so we now buy things like {tool} secondhand.",
    "{name} [admits|says] that the first attempt at {activity} was a [complete|total] mess.",
    "Do not [worry|panic] if things look [untidy|messy] at first, because that is part of the process.",
    "A friend of ours in {town} swears by {tool}, and after trying it we [understand|see] why.",
    "The biggest mistake we made was rushing, and we paid for it with {big} dollars of wasted materials.",
    "In {month}, the days get [longer|shorter] and {activity} becomes [easier|harder] to fit into a busy week.",
    "You do not need expensive gear to get started, although {tool} [certainly|definitely] helps.",
    "{things} need more attention than most people think, especially during a [dry|wet|cold|hot] spell.",
    "When {name} moved to {town} in {year}, the first project was {activity}.",
    "Our neighbour has been doing this for {big} years and still learns something new every {season}.",
    "If the weather turns, move everything [to|into] {place} and wait for a better day.",
    "The [short|simple] answer is that {things} do best with steady care rather than [big|sudden] bursts of effort.",
    "We tried [three|four|five] different approaches, and only one of them was worth the trouble.",
    "Keep [a close eye|an eye] on {things}, because small problems tend to [grow|spread] quickly.",
    "By the end of {month}, the [difference|change] was obvious to everyone who [visited|came round].",
    "{name} and {name2} [split|shared] the work, which made {activity} feel much less like a chore.",
    "[Some|Many] people prefer to hire a professional, and that is a perfectly reasonable choice.",
    "The [library|community centre] in {town} runs a [free|cheap] workshop on this every {month}.",
    "What surprised us most was how much calmer [we|everyone] felt after an afternoon of {activity}.",
    "There was a [long|lively] discussion about {things} on the forum last week, with more than {big} replies.",
    "We [will|plan to] write a longer post about {tool} once we have used it for a full {season}.",
    "For now, the [best|most useful] advice we can give is to start small and keep going.",
    "It took {name} {num} attempts to get it right, but the second half of the year went [smoothly|much better].",
    "Nobody in our family knew much about {things} before {year}, so we learned [as we went|the hard way].",
    "On a good {weekday}, we can [finish|manage] {activity} before lunch and still have time for a walk.",
    "The [old|original] guide from the {town} society is still one of the clearest introductions we have read.",
    "[Remember|Keep in mind] that {place} can look very different from one {season} to the next.",
    "If you have questions, leave a comment below and we will [do our best to answer|try to help].",
    "We have [also|recently] noticed that {things} respond well to a little extra attention in {month}.",
    "Looking back, the [time|money] we spent on {tool} was the best investment of the whole project.",
    "A [quick|rough] estimate suggests that we spent about {num} hours a week on {activity}.",
    "The first [step|thing] is to look at {place} honestly and decide what you [really|actually] want from it.",
    "{name} [still|often] laughs about the day the whole plan fell apart because of {things}.",
    "[Next|This] {season}, we want to try {activity} with the children and see how they [get on|like it].",
    "Several readers asked about costs, so here is a rough breakdown from our [own|last] year.",
    "In total, the project cost a little under {big}0 dollars, which felt [fair|reasonable] for what we got.",
    "It is worth talking to people in {town} who have done this before, because local knowledge [counts|matters].",
    "[Above all|In the end], {activity} should be something you enjoy rather than another item on a list.",
]
TITLES = [
    "[Notes on|A beginner's guide to|What we learned from|A year of] {activity}",
    "{things}: [what worked for us|lessons from {town}|a practical guide]",
]
BYLINE = "[Posted by|Written by|By] {name} on {month} {day}, {year}"
FOOTERS = [
    "Filed under {topic}, weekend projects",
    "Share this post: Facebook | Twitter | Email",
    "{num} comments | Leave a reply",
]
SYNONYMS = {
    "start": "begin",
    "simple": "plain",
    "finally": "eventually",
    "quickly": "rapidly",
    "wise": "sensible",
    "mistake": "error",
    "obvious": "clear",
    "pleasant": "enjoyable",
    "difference": "change",
    "biggest": "largest",
    "clearest": "simplest",
    "friend": "pal",
    "calmer": "happier",
    "best": "finest",
    "worth": "worthy of",
    "help": "assist",
}
FOREIGN = {  # lang -> (templates, slots); small hand-written lists
    "de": (
        [
            "Im {season} haben wir mit {things} angefangen, und das Ergebnis war besser als erwartet.",
            "{name} aus {town} sagt, dass man vor allem Geduld braucht.",
            "Wer zum ersten Mal damit beginnt, sollte sich nicht zu viel auf einmal vornehmen.",
            "Die meisten Anfänger unterschätzen, wie viel Zeit das wirklich kostet.",
            "Am Wochenende trifft sich der Verein in {town}, und neue Gesichter sind immer willkommen.",
            "Nach {num} Wochen hatten wir endlich eine Routine, die für die ganze Familie funktioniert.",
            "Es lohnt sich, ein kleines Notizbuch zu führen, denn man vergisst schnell, was man im letzten "
            "Jahr gemacht hat.",
            "Unser Nachbar macht das seit {big} Jahren und lernt trotzdem jede Saison etwas Neues.",
            "Wenn das Wetter umschlägt, sollte man alles rechtzeitig ins Haus bringen.",
            "Die Preise sind seit {year} deutlich gestiegen, deshalb kaufen wir vieles gebraucht.",
            "Wir haben drei verschiedene Methoden ausprobiert, aber nur eine hat sich wirklich bewährt.",
            "Am Ende sollte es Freude machen und keine weitere Pflicht auf der Liste sein.",
            "Bei Fragen könnt ihr gerne unten einen Kommentar hinterlassen.",
            "{name} hat uns im letzten {season} zum ersten Mal geholfen und war sofort begeistert.",
            "Ein guter Freund aus {town} hat uns gezeigt, wie man es richtig macht.",
            "Manchmal dauert es {num} Stunden, bis alles wieder ordentlich aufgeräumt ist.",
            "Im Internet findet man viele Tipps, aber nicht alle davon sind wirklich hilfreich.",
            "Der größte Fehler war, dass wir am Anfang zu ungeduldig waren.",
            "Nächstes Jahr wollen wir mit {things} weitermachen und unsere Erfahrungen hier teilen.",
        ],
        dict(
            season="Frühling|Sommer|Herbst|Winter",
            things="Tomaten|Kräutern|dem Gemüsegarten|dem Brotbacken|dem Radfahren|der Fotografie",
            name="Jonas|Lena|Matthias|Sophie|Felix",
            town="Freiburg|Bamberg|Lüneburg|Konstanz|Görlitz",
        ),
    ),
    "fr": (
        [
            "L'année dernière, nous avons commencé {things}, et le résultat a dépassé nos attentes.",
            "{name}, qui habite à {town}, dit que la patience est la chose la plus importante.",
            "Si vous débutez, il vaut mieux commencer petit et ne pas tout faire en même temps.",
            "La plupart des débutants sous-estiment le temps que cela demande vraiment.",
            "Le club de {town} se réunit chaque semaine, et les nouveaux membres sont toujours les bienvenus.",
            "Après {num} semaines d'essais, nous avons enfin trouvé une routine qui convient à toute la famille.",
            "Il est utile de tenir un petit carnet, car on oublie vite ce que l'on a fait l'année précédente.",
            "Notre voisin fait cela depuis {big} ans et il apprend encore quelque chose chaque saison.",
            "Les prix ont beaucoup augmenté depuis {year}, alors nous achetons souvent du matériel d'occasion.",
            "Nous avons essayé trois méthodes différentes, mais une seule valait vraiment la peine.",
            "Au fond, cela doit rester un plaisir et non une corvée de plus.",
            "Si vous avez des questions, laissez un commentaire ci-dessous et nous essaierons de vous aider.",
            "{name} nous a aidés pour la première fois et a tout de suite adoré.",
            "Un ami de {town} nous a montré comment bien faire les choses.",
            "Parfois, il faut {num} heures pour tout ranger correctement.",
            "On trouve beaucoup de conseils sur Internet, mais ils ne sont pas tous vraiment utiles.",
            "La plus grosse erreur a été de vouloir aller trop vite au début.",
            "L'année prochaine, nous voulons continuer {things} et partager notre expérience ici.",
        ],
        dict(
            things="le jardinage|la cuisine au four|le vélo|la photographie|la randonnée",
            name="Camille|Julien|Élodie|Mathieu|Sophie",
            town="Lyon|Nantes|Annecy|Rouen|Dijon",
        ),
    ),
    "es": (
        [
            "El año pasado empezamos con {things}, y el resultado fue mejor de lo que esperábamos.",
            "{name}, que vive en {town}, dice que lo más importante es la paciencia.",
            "Si es tu primera vez, es mejor empezar poco a poco y no hacerlo todo a la vez.",
            "La mayoría de los principiantes subestima el tiempo que esto requiere de verdad.",
            "El club de {town} se reúne cada semana, y los nuevos miembros siempre son bienvenidos.",
            "Después de {num} semanas de pruebas, por fin encontramos una rutina que funciona para toda la familia.",
            "Vale la pena llevar un pequeño cuaderno, porque se olvida rápido lo que se hizo el año anterior.",
            "Nuestro vecino hace esto desde hace {big} años y todavía aprende algo nuevo cada temporada.",
            "Los precios han subido mucho desde {year}, así que ahora compramos muchas cosas de segunda mano.",
            "Probamos tres métodos distintos, pero solo uno valió realmente la pena.",
            "Al final, debe ser algo que se disfruta y no otra obligación más.",
            "Si tienes preguntas, deja un comentario abajo e intentaremos ayudarte.",
            "{name} nos ayudó por primera vez y le encantó desde el principio.",
            "Un amigo de {town} nos enseñó cómo hacerlo bien.",
            "A veces se necesitan {num} horas para dejarlo todo ordenado.",
            "En internet hay muchos consejos, pero no todos son realmente útiles.",
            "El mayor error fue querer ir demasiado rápido al principio.",
            "El año que viene queremos seguir con {things} y compartir nuestra experiencia aquí.",
        ],
        dict(
            things="el huerto|la repostería|la bicicleta|la fotografía|el senderismo",
            name="Lucía|Javier|Carmen|Diego|Marta",
            town="Sevilla|Valencia|Bilbao|Granada|Salamanca",
        ),
    ),
}
PRODUCTS = (
    "watches|sunglasses|phone cases|sneakers|handbags|vitamins|perfume|headphones|casino bonuses|car insurance".split(
        "|"
    )
)
KEYWORDS = (
    "cheap discount deals best buy online free shipping sale offer price outlet bargain coupon promo lowest "
    "guaranteed top quality fast delivery".split()
)
LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et "
    "dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris nisi aliquip ex ea "
    "commodo consequat".split()
)
SPAM_KINDS = ("repeated_lines", "keyword_spam", "lorem_ipsum", "click_here", "too_short", "symbols", "code")


def fill(template: str, rng: random.Random, slots: dict[str, str]) -> str:
    """Replace `[a|b]` by one choice and `{slot}` by one of `slots[slot]` ("x|y|z"); capitalise the first letter."""
    text = re.sub(r"\[([^\]]+)\]", lambda m: rng.choice(m.group(1).split("|")), template)
    text = re.sub(r"\{(\w+)\}", lambda m: rng.choice(slots[m.group(1)].split("|")), text)
    return text[:1].upper() + text[1:]


def page_slots(rng: random.Random, topic: str) -> dict[str, str]:
    names = rng.sample(NAMES, 2)
    common = dict(name=names[0], name2=names[1], town="|".join(TOWNS), season="|".join(SEASONS), topic=topic)
    common |= dict(month="|".join(MONTHS), weekday="|".join(WEEKDAYS), day=str(rng.randint(1, 28)))
    common |= dict(num=str(rng.randint(2, 12)), big=str(rng.randint(12, 45)), year=str(rng.randint(2009, 2024)))
    return common | TOPICS[topic]


def english_page(rng: random.Random) -> str:
    """An ordinary blog-like page: title, optional byline, 3-5 paragraphs of 3-4 template sentences, optional
    footer."""
    topic = rng.choice(sorted(TOPICS))
    slots = page_slots(rng, topic)
    sizes = [rng.randint(3, 4) for _ in range(rng.randint(3, 5))]
    sentences = iter(fill(t, rng, slots) for t in rng.sample(EN_TEMPLATES, sum(sizes)))
    paragraphs = [" ".join(next(sentences) for _ in range(n)) for n in sizes]
    head = [fill(rng.choice(TITLES), rng, slots)] + ([fill(BYLINE, rng, slots)] if rng.random() < 0.5 else [])
    foot = [fill(rng.choice(FOOTERS), rng, slots)] if rng.random() < 0.3 else []
    return "\n\n".join(head + paragraphs + foot)


def quoting_page(rng: random.Random, question: str) -> str:
    """An ordinary page with a word problem pasted into it (homework help, a puzzle corner): contamination."""
    text = english_page(rng).split("\n\n")
    intro = rng.choice(
        [
            "A reader sent us this one from her son's homework:",
            "This week's puzzle corner:",
            "Here is the problem the class got stuck on:",
        ]
    )
    text.insert(rng.randint(1, len(text) - 1), f"{intro} {question}")
    return "\n\n".join(text)


def near_duplicate(text: str, rng: random.Random) -> tuple[str, str]:
    """A copy with the edits web mirrors make: a new header or footer line, or 1-3 words swapped for synonyms."""
    edit = rng.choice(["header", "footer", "words"])
    slots = page_slots(rng, rng.choice(sorted(TOPICS)))
    if edit == "header":
        return fill(BYLINE, rng, slots) + " | Updated\n\n" + text, edit
    if edit == "footer":
        return text + "\n\n" + fill(rng.choice(FOOTERS), rng, slots) + " (mirror)", edit
    words = text.split(" ")
    spots = [i for i, w in enumerate(words) if w.strip(".,:") in SYNONYMS]
    for i in rng.sample(spots, min(len(spots), rng.randint(1, 3))) or [len(words) - 1]:
        core = words[i].strip(".,:")
        words[i] = words[i].replace(core, SYNONYMS.get(core, core + " indeed"))
    return " ".join(words), edit


def pii_page(rng: random.Random) -> tuple[str, dict[str, list[str]]]:
    """An ordinary page with a contact paragraph holding an email, a phone number and a public IP address."""
    first, last = rng.choice(NAMES), rng.choice(["Parker", "Okafor", "Silva", "Nguyen", "Schmidt", "Haddad"])
    email = (
        f"{first.lower()}.{last.lower()}{rng.randint(1, 99)}@"
        f"{rng.choice(['example.com', 'example.org', 'mail.example.net'])}"
    )
    phone = rng.choice(["({a}) 555-01{b:02d}", "{a}-555-01{b:02d}", "+1 {a} 555 01{b:02d}"]).format(
        a=rng.randint(201, 989), b=rng.randint(0, 99)
    )
    while not (ip := ipaddress.ip_address(rng.getrandbits(32))).is_global or ip.is_multicast:
        pass
    contact = (
        f"For questions about the meetup, write to {email} or call {first} on {phone}. The club archive is "
        f"mirrored on our own server at {ip}, so members can download the old newsletters."
    )
    paragraphs = english_page(rng).split("\n\n")
    paragraphs.insert(rng.randint(1, len(paragraphs) - 1), contact)  # after the title, before the last block
    return "\n\n".join(paragraphs), {"emails": [email], "phones": [phone], "ips": [str(ip)]}


def foreign_page(rng: random.Random, lang: str) -> str:
    templates, slots = FOREIGN[lang]
    slots = slots | dict(num=str(rng.randint(2, 12)), big=str(rng.randint(15, 60)), year=str(rng.randint(2009, 2024)))
    sentences = [fill(t, rng, slots) for t in rng.sample(templates, rng.randint(8, 10))]
    cut = len(sentences) // 2
    return " ".join(sentences[:cut]) + "\n\n" + " ".join(sentences[cut:])


def spam_page(rng: random.Random, kind: str) -> str:
    """Low-quality pages of a given kind; each is meant to fail at least one datatrove heuristic filter."""
    product, site = rng.choice(PRODUCTS), rng.choice(TOWNS).replace(" ", "").lower() + "-deals"
    if kind == "repeated_lines":  # GopherRepetition dup_line_frac, FineWeb char_dup_ratio
        line = f"Buy {product} online at the best price and get free shipping with every order from {site}!"
        return "\n".join([line] * rng.randint(12, 20) + [f"Visit {site} today."])
    if kind == "keyword_spam":  # no stop words (GopherQuality), repeated n-grams (GopherRepetition)
        words = [rng.choice(KEYWORDS + [product] * 4) for _ in range(rng.randint(60, 120))]
        return "\n".join(" ".join(words[i : i + 12]) for i in range(0, len(words), 12))
    if kind == "lorem_ipsum":  # C4 lorem_ipsum, no English stop words
        body = [
            " ".join(rng.choice(LOREM) for _ in range(rng.randint(8, 14))) + "." for _ in range(rng.randint(6, 10))
        ]
        return "Lorem ipsum dolor sit amet. " + " ".join(s.capitalize() for s in body)
    if kind == "click_here":  # navigation boilerplate: GopherQuality short doc
        return (
            f"Home | About us | Shop {product} | Contact\nClick here to subscribe\nClick here for {product}\n"
            f"Log in | Register\n© {rng.randint(2010, 2024)} {site}. All rights reserved."
        )
    if kind == "too_short":
        return rng.choice(
            [
                f"Page not found: /{product.replace(' ', '-')}/{rng.randint(1, 999)}",
                f"Coming soon to {site}, check back later.",
                f"Thanks for visiting {site}.",
            ]
        )
    if kind == "symbols":  # GopherQuality too_many_hashes / ellipsis
        tags = " ".join(f"#{rng.choice(KEYWORDS + PRODUCTS[:6])}" for _ in range(rng.randint(40, 60)))
        return (
            f"New {product} drop... you have to see this... link in bio...\n{tags}\nFollow and share with your "
            "friends..."
        )
    if kind == "code":  # C4 curly_bracket / javascript lines
        var = rng.choice(["cart", "menu", "popup", "banner"]) + str(rng.randint(1, 99))
        lines = [f"var {var}{i} = document.getElementById('{var}-{i}');" for i in range(rng.randint(5, 10))]
        return "\n".join([f"function init{var.title()}() {{", *lines, f"  {var}0.style.display = 'none';", "}"])
    raise ValueError(f"unknown spam kind {kind!r}; expected one of {SPAM_KINDS}")


def _calc(expr: str) -> tuple[int, str]:
    """Evaluate an arithmetic expression we wrote ourselves; return the value and GSM8K's `<<expr=value>>value`."""
    value = eval(expr, {"__builtins__": {}})  # noqa: S307 (our own digits and operators only)
    assert value == int(value), expr
    return int(value), f"<<{expr}={int(value)}>>{int(value)}"


def word_problem(rng: random.Random) -> tuple[str, str]:
    """One GSM8K-style problem: (question, worked solution ending with `#### <answer>`)."""
    name, kind = rng.choice(NAMES), rng.randrange(6)
    r = rng.randint
    if kind == 0:
        n1, p1, n2, p2 = r(2, 9), r(2, 15), r(2, 9), r(2, 15)
        bill = 50 * ((n1 * p1 + n2 * p2) // 50 + 1)
        q = (
            f"{name} buys {n1} notebooks at ${p1} each and {n2} pens at ${p2} each, and pays with ${bill}. How "
            f"much change does {name} get back?"
        )
        a, sa = _calc(f"{n1}*{p1}")
        b, sb = _calc(f"{n2}*{p2}")
        t, st = _calc(f"{a}+{b}")
        ans, s = _calc(f"{bill}-{t}")
        steps = [
            f"The notebooks cost {n1}*{p1} = ${sa}.",
            f"The pens cost {n2}*{p2} = ${sb}.",
            f"Together they cost {a}+{b} = ${st}.",
            f"So the change is {bill}-{t} = ${s}.",
        ]
    elif kind == 1:
        b, m, sold, given = r(2, 8), r(6, 24), r(3, 10), r(1, 6)
        total, st = _calc(f"{b}*{m}")
        sold = min(sold, total - given - 1)
        left, sl = _calc(f"{total}-{sold}-{given}")
        q = (
            f"{name} bakes {b} batches of cookies with {m} cookies in each batch. {name} sells {sold} cookies "
            f"and gives {given} to a neighbour. How many cookies are left?"
        )
        ans, steps = (
            left,
            [
                f"{name} bakes {b}*{m} = {st} cookies.",
                f"After selling and giving some away, {total}-{sold}-{given} = {sl} cookies are left.",
            ],
        )
    elif kind == 2:
        s1, h1, s2, h2 = r(30, 70), r(1, 5), r(20, 60), r(1, 4)
        d1, sd1 = _calc(f"{s1}*{h1}")
        d2, sd2 = _calc(f"{s2}*{h2}")
        ans, sd = _calc(f"{d1}+{d2}")
        q = (
            f"{name} drives at {s1} miles per hour for {h1} hours, then at {s2} miles per hour for {h2} hours. "
            f"How many miles does {name} drive in total?"
        )
        steps = [
            f"The first part is {s1}*{h1} = {sd1} miles.",
            f"The second part is {s2}*{h2} = {sd2} miles.",
            f"In total {name} drives {d1}+{d2} = {sd} miles.",
        ]
    elif kind == 3:
        n = 4 * r(5, 15) * 2
        quarter, sq = _calc(f"{n}/4")
        rest, sr = _calc(f"{n}-{quarter}")
        half, sh = _calc(f"{rest}/2")
        ans, sa = _calc(f"{rest}-{half}")
        q = (
            f"A school has {n} students. A quarter of them join the art club, and half of the remaining "
            "students join the music club. How many students join neither club?"
        )
        steps = [
            f"{n}/4 = {sq} students join the art club.",
            f"That leaves {n}-{quarter} = {sr} students.",
            f"Half of them, {rest}/2 = {sh}, join the music club.",
            f"So {rest}-{half} = {sa} students join neither club.",
        ]
    elif kind == 4:
        price, pct, k = 20 * r(2, 15), rng.choice([10, 20, 25, 50]), r(2, 6)
        off, so = _calc(f"{price}*{pct}/100")
        sale, ss = _calc(f"{price}-{off}")
        ans, st = _calc(f"{sale}*{k}")
        q = (
            f"A jacket costs ${price}. During a sale it is {pct}% off. {name} buys {k} jackets for the family. "
            f"How much does {name} pay?"
        )
        steps = [
            f"The discount is {price}*{pct}/100 = ${so}.",
            f"Each jacket costs {price}-{off} = ${ss}.",
            f"{k} jackets cost {sale}*{k} = ${st}.",
        ]
    else:
        per_day, days, per, more = r(10, 25), r(2, 6), rng.choice([5, 8, 10, 12, 15, 20]), r(2, 9)
        pages = per_day * days + per * more
        read, sr = _calc(f"{per_day}*{days}")
        left, sl = _calc(f"{pages}-{read}")
        ans, sa = _calc(f"{left}/{per}")
        q = (
            f"{name}'s book has {pages} pages. {name} reads {per_day} pages a day for {days} days, then {per} "
            "pages a day. How many more days does it take to finish the book?"
        )
        steps = [
            f"In {days} days {name} reads {per_day}*{days} = {sr} pages.",
            f"That leaves {pages}-{read} = {sl} pages.",
            f"At {per} pages a day that takes {left}/{per} = {sa} days.",
        ]
    return q, "\n".join(steps) + f"\n#### {ans}"
