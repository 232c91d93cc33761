"""COCO's 80 object categories as the CHAIR metric reads captions (Rohrbach et al., 2018).

Data only; :mod:`vasink.scoring.chair` builds the lookup from it. The synonym lists and the special
cases follow the metric's published ``synonyms.txt`` and its hard-coded rules, so CHAIR numbers stay
comparable with the papers. Duplicates in the published lists are dropped (they change nothing).
Known quirks kept on purpose: "solider" (a typo in the source list) is a synonym of person, and "baby",
"passenger", "player" fire for person unless a compound below absorbs them.
"""

from __future__ import annotations

# canonical COCO category name -> comma-separated surface forms (singular; the canonical name is implied)
SYNONYMS: dict[str, str] = {
    "person": "girl, boy, man, woman, kid, child, chef, baker, people, adult, rider, children, baby, worker, "
              "passenger, sister, biker, policeman, cop, officer, lady, cowboy, bride, groom, male, female, guy, "
              "traveler, mother, father, gentleman, pitcher, player, skier, snowboarder, skater, skateboarder, "
              "foreigner, caller, offender, coworker, trespasser, patient, politician, soldier, grandchild, "
              "serviceman, walker, drinker, doctor, bicyclist, thief, buyer, teenager, student, camper, driver, "
              "solider, hunter, shopper, villager",
    "bicycle": "bike, unicycle, minibike, trike",
    "car": "automobile, van, minivan, sedan, suv, hatchback, cab, jeep, coupe, taxicab, limo, taxi",
    "motorcycle": "scooter, motor bike, motor cycle, motorbike, moped",
    "airplane": "jetliner, plane, air plane, monoplane, aircraft, jet, airbus, biplane, seaplane",
    "bus": "minibus, trolley",
    "train": "locomotive, tramway, caboose",
    "truck": "pickup, lorry, hauler, firetruck",
    "boat": "ship, liner, sailboat, motorboat, dinghy, powerboat, speedboat, canoe, skiff, yacht, kayak, "
            "catamaran, pontoon, houseboat, vessel, rowboat, trawler, ferryboat, watercraft, tugboat, schooner, "
            "barge, ferry, sailboard, paddleboat, lifeboat, freighter, steamboat, riverboat, battleship, steamship",
    "traffic light": "street light, traffic signal, stop light, streetlight, stoplight",
    "fire hydrant": "hydrant",
    "stop sign": "",
    "parking meter": "",
    "bench": "pew",
    "bird": "ostrich, owl, seagull, goose, duck, parakeet, falcon, robin, pelican, waterfowl, heron, hummingbird, "
            "mallard, finch, pigeon, sparrow, seabird, osprey, blackbird, fowl, shorebird, woodpecker, egret, "
            "chickadee, quail, bluebird, kingfisher, buzzard, willet, gull, swan, bluejay, flamingo, cormorant, "
            "parrot, loon, gosling, waterbird, pheasant, rooster, sandpiper, crow, raven, turkey, oriole, cowbird, "
            "warbler, magpie, peacock, cockatiel, lorikeet, puffin, vulture, condor, macaw, peafowl, cockatoo, "
            "songbird",
    "cat": "kitten, feline, tabby",
    "dog": "puppy, beagle, pup, chihuahua, schnauzer, dachshund, rottweiler, canine, pitbull, collie, pug, terrier, "
           "poodle, labrador, doggie, doberman, mutt, doggy, spaniel, bulldog, sheepdog, weimaraner, corgi, cocker, "
           "greyhound, retriever, brindle, hound, whippet, husky",
    "horse": "colt, pony, racehorse, stallion, equine, mare, foal, palomino, mustang, clydesdale, bronc, bronco",
    "sheep": "lamb, ram, goat, ewe",
    "cow": "cattle, oxen, ox, calf, holstein, heifer, buffalo, bull, zebu, bison",
    "elephant": "",
    "bear": "panda",
    "zebra": "",
    "giraffe": "",
    "backpack": "knapsack",
    "umbrella": "",
    "handbag": "wallet, purse, briefcase",
    "tie": "bow, bow tie",
    "suitcase": "suit case, luggage",
    "frisbee": "",
    "skis": "ski",
    "snowboard": "",
    "sports ball": "ball",
    "kite": "",
    "baseball bat": "",
    "baseball glove": "",
    "skateboard": "",
    "surfboard": "longboard, skimboard, shortboard, wakeboard",
    "tennis racket": "racket",
    "bottle": "",
    "wine glass": "",
    "cup": "",
    "fork": "",
    "knife": "pocketknife, knive",
    "spoon": "",
    "bowl": "container",
    "banana": "",
    "apple": "",
    "sandwich": "burger, sub, cheeseburger, hamburger",
    "orange": "",
    "broccoli": "",
    "carrot": "",
    "hot dog": "",
    "pizza": "",
    "donut": "doughnut, bagel",
    "cake": "cheesecake, cupcake, shortcake, coffeecake, pancake",
    "chair": "seat, stool",
    "couch": "sofa, recliner, futon, loveseat, settee, chesterfield",
    "potted plant": "houseplant",
    "bed": "",
    "dining table": "table, desk",
    "toilet": "urinal, commode, lavatory, potty",
    # "televison" is the source list's own misspelling, kept so the same captions match
    "tv": "monitor, televison, television",
    "laptop": "computer, notebook, netbook, lenovo, macbook, laptop computer",
    "mouse": "",
    "remote": "",
    "keyboard": "",
    # the source writes "iPhone", which never matches its lower-cased captions; we match it
    "cell phone": "mobile phone, phone, cellphone, telephone, phon, smartphone, iphone",
    "microwave": "",
    "oven": "stovetop, stove, stove top oven",
    "toaster": "",
    "sink": "",
    "refrigerator": "fridge, freezer",
    "book": "",
    "clock": "",
    "vase": "",
    "scissors": "",
    "teddy bear": "teddybear",
    "hair drier": "hairdryer",
    "toothbrush": "",
}

# Two-word phrases read as one word (after singularizing), each -> the word it stands for. Phrases that
# stand for themselves but are no object ("home plate", "train track") stop "plate"/"train" firing.
# The source also lists "stove top oven", which its two-word window can never match; left out.
DOUBLE_WORDS: dict[str, str] = {
    **{w: w for w in (
        "motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal",
        "stop light", "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball", "baseball bat",
        "baseball glove", "tennis racket", "wine glass", "hot dog", "cell phone", "mobile phone", "teddy bear",
        "hair drier", "potted plant", "laptop computer", "home plate", "train track",
    )},
    "bow tie": "tie",
    "toilet seat": "toilet",
}

# "baby bird" / "adult bird" is a bird, not a person; "passenger jet" is a jet, not a person.
ANIMAL_WORDS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal", "cub")
VEHICLE_WORDS = ("jet", "train")
for _word in ANIMAL_WORDS:
    DOUBLE_WORDS[f"baby {_word}"] = _word
    DOUBLE_WORDS[f"adult {_word}"] = _word
for _word in VEHICLE_WORDS:
    DOUBLE_WORDS[f"passenger {_word}"] = _word
del _word

# word -> word whose presence in the same caption silences it ("the seat of the toilet" is no chair)
SILENCED_BY: dict[str, str] = {"seat": "toilet"}

CATEGORIES: tuple[str, ...] = tuple(SYNONYMS)
assert len(CATEGORIES) == 80
