"""Questions and prompts written for bench/quality.py (nothing here is downloaded).

``FACTUAL``: short questions with every accepted answer (matched case-insensitively as whole words in
the first line of the reply). ``arithmetic()``: small sums, differences and products, checked on the
first number after "=" (or the first number when there is no "="). ``CREATIVE``: open-ended prompts.
"""

from __future__ import annotations

CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Germany": "Berlin", "Spain": "Madrid",
    "the United Kingdom": "London", "Russia": "Moscow", "China": "Beijing", "Egypt": "Cairo", "Canada": "Ottawa",
    "Australia": "Canberra", "Greece": "Athens", "Portugal": "Lisbon", "the Netherlands": "Amsterdam",
    "Belgium": "Brussels", "Sweden": "Stockholm", "Norway": "Oslo", "Denmark": "Copenhagen", "Finland": "Helsinki",
    "Poland": "Warsaw", "Austria": "Vienna", "Ireland": "Dublin", "Turkey": "Ankara", "Iran": "Tehran",
    "Iraq": "Baghdad", "Saudi Arabia": "Riyadh", "Kenya": "Nairobi", "South Korea": "Seoul", "Thailand": "Bangkok",
    "Vietnam": "Hanoi", "Indonesia": "Jakarta", "the Philippines": "Manila", "Peru": "Lima", "Chile": "Santiago",
    "Cuba": "Havana", "Hungary": "Budapest", "the Czech Republic": "Prague", "Afghanistan": "Kabul",
    "New Zealand": "Wellington", "Scotland": "Edinburgh", "Argentina": "Buenos Aires", "Mexico": "Mexico City",
    "Switzerland": "Bern", "Pakistan": "Islamabad", "Nigeria": "Abuja", "Ukraine": "Kyiv|Kiev",
    "Colombia": "Bogota|Bogotá", "Brazil": "Brasilia|Brasília", "India": "New Delhi|Delhi", "Romania": "Bucharest",
}

LANGUAGES = {
    "Spain": "Spanish", "France": "French", "Germany": "German", "Italy": "Italian", "Japan": "Japanese",
    "Brazil": "Portuguese", "Russia": "Russian", "China": "Chinese|Mandarin", "Greece": "Greek", "Portugal": "Portuguese",
}

CURRENCIES = {
    "Japan": "yen", "the United Kingdom": "pound|pounds|sterling", "the United States": "dollar|dollars",
    "India": "rupee|rupees", "Germany": "euro|euros", "Mexico": "peso|pesos",
}

OPPOSITES = {
    "hot": "cold", "up": "down", "big": "small|little", "fast": "slow", "day": "night", "happy": "sad",
    "open": "closed|close|shut", "light": "dark|heavy", "tall": "short", "left": "right", "wet": "dry",
    "early": "late", "hard": "soft|easy", "full": "empty", "strong": "weak", "black": "white", "win": "lose|loss",
    "young": "old", "inside": "outside", "north": "south", "east": "west", "love": "hate", "rich": "poor",
    "heavy": "light", "push": "pull", "above": "below|beneath", "true": "false", "begin": "end|finish",
    "good": "bad|evil", "clean": "dirty", "thick": "thin", "quiet": "loud|noisy", "near": "far",
    "first": "last", "high": "low", "deep": "shallow", "cheap": "expensive", "asleep": "awake",
    "come": "go|leave", "before": "after", "friend": "enemy|foe", "summer": "winter", "sweet": "sour|bitter|salty",
}

PLURALS = {
    "mouse": "mice", "child": "children", "foot": "feet", "tooth": "teeth", "man": "men", "woman": "women",
    "goose": "geese", "person": "people|persons", "leaf": "leaves", "knife": "knives", "box": "boxes",
    "city": "cities", "baby": "babies", "wolf": "wolves", "cactus": "cacti|cactuses",
    "dog": "dogs", "house": "houses", "bus": "buses|busses", "glass": "glasses", "fish": "fish|fishes",
}

OTHER = [
    ("What color is the sky on a clear day?", "blue"),
    ("What color is grass?", "green"),
    ("What color is a ripe banana?", "yellow"),
    ("What color is snow?", "white"),
    ("What color is coal?", "black"),
    ("What color is blood?", "red"),
    ("What color is a lemon?", "yellow"),
    ("What color is milk chocolate?", "brown"),
    ("What color do you get by mixing blue and yellow?", "green"),
    ("What color do you get by mixing red and white?", "pink"),
    ("What color is a stop sign?", "red"),
    ("What sound does a cow make?", "moo"),
    ("What sound does a cat make?", "meow|miaow|purr"),
    ("What sound does a dog make?", "bark|woof|barks"),
    ("How many legs does a spider have?", "8|eight"),
    ("How many legs does an insect have?", "6|six"),
    ("How many legs does a dog have?", "4|four"),
    ("How many legs does a bird have?", "2|two"),
    ("What is the largest mammal?", "blue whale|whale"),
    ("What is the fastest land animal?", "cheetah"),
    ("Which animal is known as the king of the jungle?", "lion"),
    ("Which animal has a trunk?", "elephant|elephants"),
    ("What is the tallest animal?", "giraffe"),
    ("What is a baby dog called?", "puppy|pup"),
    ("What is a baby cat called?", "kitten|kitty"),
    ("What is a baby cow called?", "calf"),
    ("Which animal carries its baby in a pouch and hops?", "kangaroo"),
    ("Which striped animal looks like a horse?", "zebra"),
    ("Which black and white bear eats bamboo?", "panda"),
    ("Which insect makes honey?", "bee|bees|honeybee|honeybees"),
    ("What is the largest bird?", "ostrich"),
    ("How many days are in a week?", "7|seven"),
    ("How many months are in a year?", "12|twelve"),
    ("How many hours are in a day?", "24|twenty-four"),
    ("How many minutes are in an hour?", "60|sixty"),
    ("How many seconds are in a minute?", "60|sixty"),
    ("How many days are in a leap year?", "366"),
    ("How many days are in a normal year?", "365"),
    ("How many weeks are in a year?", "52|fifty-two"),
    ("How many sides does a triangle have?", "3|three"),
    ("How many sides does a square have?", "4|four"),
    ("How many sides does a hexagon have?", "6|six"),
    ("How many sides does an octagon have?", "8|eight"),
    ("How many wheels does a bicycle have?", "2|two"),
    ("How many wheels does a tricycle have?", "3|three"),
    ("How many players are on a soccer team on the field?", "11|eleven"),
    ("How many continents are there?", "7|seven"),
    ("How many planets are in our solar system?", "8|eight"),
    ("How many cents are in a dollar?", "100|hundred"),
    ("How many strings does a standard guitar have?", "6|six"),
    ("What is the boiling point of water in Celsius?", "100"),
    ("What is the freezing point of water in Celsius?", "0|zero"),
    ("What is the chemical formula for water?", "H2O"),
    ("What is the chemical symbol for gold?", "Au"),
    ("What is the chemical symbol for silver?", "Ag"),
    ("What is the chemical symbol for iron?", "Fe"),
    ("What is the chemical symbol for sodium?", "Na"),
    ("What is the closest star to Earth?", "Sun"),
    ("Which planet is known as the Red Planet?", "Mars"),
    ("What is the largest planet in our solar system?", "Jupiter"),
    ("Which planet is closest to the Sun?", "Mercury"),
    ("What is Earth's natural satellite?", "Moon"),
    ("Which gas do plants absorb from the air?", "carbon dioxide|CO2"),
    ("Which gas do humans need to breathe?", "oxygen"),
    ("Which organ pumps blood through the body?", "heart"),
    ("Which organs do we use to breathe?", "lungs|lung"),
    ("What is the hardest natural substance?", "diamond|diamonds"),
    ("What do you call frozen water?", "ice"),
    ("What do bees collect from flowers?", "nectar|pollen"),
    ("What is the center of an atom called?", "nucleus"),
    ("What force keeps us on the ground?", "gravity"),
    ("Who wrote Romeo and Juliet?", "Shakespeare"),
    ("Who wrote Hamlet?", "Shakespeare"),
    ("Who painted the Mona Lisa?", "Leonardo|da Vinci|Vinci"),
    ("Who developed the theory of relativity?", "Einstein"),
    ("Who was the first president of the United States?", "Washington"),
    ("Who is known for inventing the light bulb?", "Edison"),
    ("Who is credited with inventing the telephone?", "Bell"),
    ("Who wrote the Harry Potter books?", "Rowling"),
    ("Who was the first person to walk on the Moon?", "Armstrong"),
    ("Which scientist is famous for the laws of motion and gravity?", "Newton"),
    ("What is the largest ocean on Earth?", "Pacific"),
    ("What is the longest river in Africa?", "Nile"),
    ("What is the highest mountain in the world?", "Everest"),
    ("What is the largest country in the world by area?", "Russia"),
    ("On which continent is Egypt?", "Africa"),
    ("On which continent is France?", "Europe"),
    ("On which continent is Japan?", "Asia"),
    ("In which country is the Eiffel Tower?", "France"),
    ("In which city is the Statue of Liberty?", "New York"),
    ("In which city is Big Ben?", "London"),
    ("In which city is the Colosseum?", "Rome"),
    ("In which country are the Great Pyramids of Giza?", "Egypt"),
    ("In which country is the Great Wall?", "China"),
    ("In which country is the Taj Mahal?", "India"),
    ("Which country has a maple leaf on its flag?", "Canada"),
    ("What do caterpillars turn into?", "butterfly|butterflies|moth|moths"),
    ("What is the main ingredient of guacamole?", "avocado|avocados"),
    ("What do you call a shape with three sides?", "triangle"),
    ("What shape is a ball?", "sphere|round|circle|spherical"),
    ("What do we call the meal eaten in the morning?", "breakfast"),
    ("Which season comes after winter?", "spring"),
    ("Which season comes after summer?", "autumn|fall"),
    ("What is the first month of the year?", "January"),
    ("What is the last month of the year?", "December"),
    ("What day comes after Monday?", "Tuesday"),
    ("What day comes after Friday?", "Saturday"),
    ("What do you use to write on a chalkboard?", "chalk"),
    ("What instrument has black and white keys?", "piano"),
    ("What is the opposite of up?", "down"),
    ("What fruit is used to make wine?", "grape|grapes"),
    ("What is the main language spoken in the United States?", "English"),
]


def factual() -> list[tuple[str, str]]:
    """Every factual question with its accepted answers (``|``-separated)."""
    questions = [(f"What is the capital of {country}?", city) for country, city in CAPITALS.items()]
    questions += [(f"What language is mainly spoken in {country}?", lang) for country, lang in LANGUAGES.items()]
    questions += [(f"What is the currency of {country}?", cur) for country, cur in CURRENCIES.items()]
    questions += [(f"What is the opposite of {word}?", opposite) for word, opposite in OPPOSITES.items()
                  if word != "up"]
    questions += [(f"What is the plural of {word}?", plural) for word, plural in PLURALS.items()]
    return questions + OTHER


def arithmetic() -> list[tuple[str, str]]:
    """Small sums, differences and products (deterministic)."""
    pairs = [(3, 4), (7, 5), (9, 8), (6, 6), (12, 7), (15, 5), (8, 9), (11, 11), (20, 13), (14, 6),
             (2, 9), (25, 25), (30, 12), (18, 4), (7, 7), (13, 8), (40, 20), (16, 16), (50, 25), (19, 3)]
    questions = [(f"What is {a} + {b}?", str(a + b)) for a, b in pairs]
    questions += [(f"What is {a} - {b}?", str(a - b)) for a, b in pairs if a > b]
    pairs += [(1, 1), (2, 2), (4, 5), (6, 3), (5, 8), (10, 4), (12, 12), (17, 2), (21, 9), (33, 11),
              (9, 4), (8, 8), (14, 14), (22, 3), (45, 5), (60, 30), (100, 50), (7, 2), (11, 6), (15, 10)]
    small = [(2, 3), (3, 4), (5, 5), (6, 7), (7, 8), (9, 9), (4, 6), (8, 3), (2, 9), (10, 10), (3, 3), (6, 5)]
    questions += [(f"What is {a} times {b}?", str(a * b)) for a, b in small]
    return questions


CREATIVE = [
    "Write a short poem about the ocean.",
    "Describe a dragon in two sentences.",
    "Tell a very short story about a lost key.",
    "Invent a new planet and describe it.",
    "Write a haiku about autumn.",
    "Describe the taste of a strawberry to someone who has never had one.",
    "Write the opening line of a mystery novel.",
    "Describe a city in the year 3000.",
    "Write a short letter from a cat to its owner.",
    "Invent a new holiday and explain how people celebrate it.",
    "Describe a sunset over the mountains.",
    "Write a short song chorus about friendship.",
    "Tell a tiny fairy tale about a brave mouse.",
    "Describe the sound of rain on a roof.",
    "Invent a new sport and explain its rules briefly.",
    "Write a motivational message for someone starting a new job.",
    "Describe a robot that learns to cook.",
    "Write a two-sentence horror story.",
    "Describe your perfect day.",
    "Invent a magical creature that lives in the forest.",
    "Write a short poem about the moon.",
    "Describe an old library at night.",
    "Tell a short story about a talking tree.",
    "Write a product description for a flying bicycle.",
    "Describe the first day of spring.",
    "Write a short speech for a pirate captain.",
    "Describe a garden on another planet.",
    "Write a limerick about a frog.",
    "Describe a busy market in the morning.",
    "Tell a short story about a time traveler who forgot something.",
]
