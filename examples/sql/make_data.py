"""Make the SQL example's data: shop.db (a small shop: departments, employees, customers, products, orders) and
data/{train,dev,test,demos}.jsonl, questions from templates with their gold queries. Deterministic (seed 0).

    python examples/sql/make_data.py

Each template is filled with values from the database; a question whose gold query returns no row is dropped, and
so is a "who / which one" question whose top answer is tied. The demos are worked trajectories: the queries in them
are RUN with the task's own tool, so the <output> blocks hold the real rows.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
import sqlite3
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZES = {"test": 100, "dev": 50, "train": 300}
PER_TEMPLATE = 40  # at most this many questions of one template

DEPARTMENTS = [("Sales", "London"), ("Engineering", "Berlin"), ("Marketing", "Paris"), ("Support", "Dublin"),
               ("Finance", "Zurich"), ("Logistics", "Rotterdam")]
TITLES = ["Manager", "Analyst", "Engineer", "Assistant", "Director", "Specialist"]
FIRST = ["Ada", "Ben", "Cleo", "Dan", "Eva", "Finn", "Gina", "Hugo", "Iris", "Jon", "Kara", "Leo", "Mia", "Nils", "Olga",
         "Paul", "Rosa", "Sam", "Tara", "Umar", "Vera", "Will", "Yara", "Zoe"]
LAST = ["Abbott", "Brandt", "Costa", "Dalton", "Eriksen", "Fischer", "Garcia", "Hughes", "Ibsen", "Jansen", "Keller",
        "Lopez", "Moreau", "Novak", "Olsen", "Petrov", "Quinn", "Rossi", "Silva", "Tanaka"]
CITIES = [("London", "UK"), ("Manchester", "UK"), ("Paris", "France"), ("Lyon", "France"), ("Berlin", "Germany"),
          ("Munich", "Germany"), ("Madrid", "Spain"), ("Rome", "Italy"), ("Milan", "Italy"), ("Lisbon", "Portugal")]
PRODUCTS = {
    "Books": ["Atlas of Rivers", "Cookbook", "Field Guide", "Poetry Collection"],
    "Electronics": ["Desk Lamp", "Headphones", "Phone Charger", "Smart Speaker", "Webcam"],
    "Garden": ["Garden Hose", "Flower Pots", "Pruning Shears", "Seed Kit"],
    "Kitchen": ["Coffee Grinder", "Frying Pan", "Kettle", "Knife Set"],
    "Toys": ["Board Game", "Jigsaw Puzzle", "Kite", "Toy Train"],
    "Sports": ["Football", "Tennis Racket", "Yoga Mat", "Water Bottle"],
}
YEARS = (2022, 2023, 2024)

JOIN_DEPT = "employees JOIN departments ON employees.department_id = departments.id"
JOIN_PRODUCT = "orders JOIN products ON orders.product_id = products.id"
JOIN_CUSTOMER = "orders JOIN customers ON orders.customer_id = customers.id"


def make_database(path: Path, seed: int = 0) -> None:
    rng = random.Random(seed)
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE departments (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT NOT NULL);
        CREATE TABLE employees (id INTEGER PRIMARY KEY, name TEXT NOT NULL, department_id INTEGER NOT NULL
            REFERENCES departments(id), title TEXT NOT NULL, salary INTEGER NOT NULL, hire_year INTEGER NOT NULL);
        CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT NOT NULL, country TEXT NOT NULL);
        CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL, category TEXT NOT NULL, price REAL NOT NULL);
        CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id),
            product_id INTEGER NOT NULL REFERENCES products(id), quantity INTEGER NOT NULL, order_date TEXT NOT NULL);
    """)
    db.executemany("INSERT INTO departments VALUES (?, ?, ?)", [(i + 1, n, c) for i, (n, c) in enumerate(DEPARTMENTS)])
    names = rng.sample([f"{f} {last}" for f in FIRST for last in LAST], 100)  # employees and customers: no one is both
    salaries = rng.sample(range(30_000, 120_001, 500), 60)  # distinct: "the highest-paid" is never a tie
    db.executemany("INSERT INTO employees VALUES (?, ?, ?, ?, ?, ?)", [
        (i + 1, names[i], rng.randint(1, len(DEPARTMENTS)), rng.choice(TITLES), salaries[i], rng.randint(2012, 2024))
        for i in range(60)])
    db.executemany("INSERT INTO customers VALUES (?, ?, ?, ?)", [
        (i + 1, names[60 + i], *rng.choice(CITIES)) for i in range(40)])
    products = [(name, category) for category, names_ in PRODUCTS.items() for name in names_]
    prices = rng.sample([p + 0.99 for p in range(4, 300)], len(products))
    db.executemany("INSERT INTO products VALUES (?, ?, ?, ?)", [
        (i + 1, name, category, prices[i]) for i, (name, category) in enumerate(products)])
    db.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?)", [
        (i + 1, rng.randint(1, 40), rng.randint(1, len(products)), rng.randint(1, 5),
         f"{rng.choice(YEARS)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}") for i in range(250)])
    db.commit()
    db.execute("VACUUM")
    db.close()


def column(db: sqlite3.Connection, query: str) -> list:
    return [row[0] for row in db.execute(query)]


def templates(db: sqlite3.Connection) -> dict[str, list[tuple[str, str]]]:
    """Template name -> [(question, gold query)] over the database's values."""
    departments, cities = column(db, "SELECT name FROM departments"), column(db, "SELECT city FROM departments")
    employees, customers = column(db, "SELECT name FROM employees"), column(db, "SELECT name FROM customers")
    products, categories = column(db, "SELECT name FROM products"), sorted(PRODUCTS)
    countries = sorted({c for _, c in CITIES})
    customer_cities = sorted({c for c, _ in CITIES})
    hire_years = range(2012, 2025)
    return {
        "count_table": [(f"How many {t} are there?", f"SELECT COUNT(*) FROM {t}")
                        for t in ("departments", "employees", "customers", "products", "orders")],
        "department_size": [(f"How many employees work in the {d} department?",
                             f"SELECT COUNT(*) FROM {JOIN_DEPT} WHERE departments.name = '{d}'") for d in departments],
        "city_staff": [(f"How many employees work in {c}?",
                        f"SELECT COUNT(*) FROM {JOIN_DEPT} WHERE departments.city = '{c}'") for c in cities],
        "department_city": [(f"Which department is located in {c}?", f"SELECT name FROM departments WHERE city = '{c}'")
                            for c in cities],
        "average_salary": [(f"What is the average salary in the {d} department?",
                            f"SELECT AVG(salary) FROM {JOIN_DEPT} WHERE departments.name = '{d}'") for d in departments],
        "total_salary": [(f"What is the total salary paid to employees of the {d} department?",
                          f"SELECT SUM(salary) FROM {JOIN_DEPT} WHERE departments.name = '{d}'") for d in departments],
        "highest_paid": [(f"Who is the highest-paid employee in the {d} department?",
                          f"SELECT employees.name FROM {JOIN_DEPT} WHERE departments.name = '{d}' "
                          f"ORDER BY employees.salary DESC LIMIT 1") for d in departments],
        "earn_more": [(f"Which employees earn more than {n} a year?", f"SELECT name FROM employees WHERE salary > {n}")
                      for n in range(80_000, 117_501, 2_500)],
        "hired_in": [(f"How many employees were hired in {y}?", f"SELECT COUNT(*) FROM employees WHERE hire_year = {y}")
                     for y in hire_years],
        "hired_list": [(f"List the employees hired in {y}.", f"SELECT name FROM employees WHERE hire_year = {y}")
                       for y in hire_years],
        "hired_after": [(f"Which employees of the {d} department were hired after {y}?",
                         f"SELECT employees.name FROM {JOIN_DEPT} WHERE departments.name = '{d}' AND "
                         f"employees.hire_year > {y}") for d in departments for y in range(2016, 2023)],
        "title_count": [(f"How many employees have the job title {t}?",
                         f"SELECT COUNT(*) FROM employees WHERE title = '{t}'") for t in TITLES],
        "employee_title": [(f"What is the job title of {e}?", f"SELECT title FROM employees WHERE name = '{e}'")
                           for e in employees],
        "employee_salary": [(f"What is the salary of {e}?", f"SELECT salary FROM employees WHERE name = '{e}'")
                            for e in employees],
        "country_customers": [(f"How many customers are from {c}?",
                               f"SELECT COUNT(*) FROM customers WHERE country = '{c}'") for c in countries],
        "country_customer_list": [(f"List the customers from {c}.",
                                   f"SELECT name FROM customers WHERE country = '{c}'") for c in countries],
        "city_customers": [(f"List the customers who live in {c}.", f"SELECT name FROM customers WHERE city = '{c}'")
                           for c in customer_cities],
        "customer_country": [(f"Which country is {c} from?", f"SELECT country FROM customers WHERE name = '{c}'")
                             for c in customers],
        "customer_orders": [(f"How many orders has {c} placed?",
                             f"SELECT COUNT(*) FROM {JOIN_CUSTOMER} WHERE customers.name = '{c}'") for c in customers],
        "product_price": [(f"What is the price of the {p}?", f"SELECT price FROM products WHERE name = '{p}'")
                          for p in products],
        "category_products": [(f"List the products in the {c} category.",
                               f"SELECT name FROM products WHERE category = '{c}'") for c in categories],
        "cheaper_than": [(f"How many products cost less than {n} dollars?",
                          f"SELECT COUNT(*) FROM products WHERE price < {n}") for n in range(20, 301, 10)],
        "pricier_than": [(f"Which products cost more than {n} dollars?", f"SELECT name FROM products WHERE price > {n}")
                         for n in range(150, 291, 10)],
        "cheapest_in_category": [(f"What is the cheapest product in the {c} category?",
                                  f"SELECT name FROM products WHERE category = '{c}' ORDER BY price ASC LIMIT 1")
                                 for c in categories],
        "most_expensive": [(f"What are the {k} most expensive products, most expensive first?",
                            f"SELECT name FROM products ORDER BY price DESC LIMIT {k}") for k in range(2, 9)],
        "units_ordered": [(f"How many units of the {p} have been ordered in total?",
                           f"SELECT SUM(orders.quantity) FROM {JOIN_PRODUCT} WHERE products.name = '{p}'")
                          for p in products],
        "orders_in_year": [(f"How many orders were placed in {y}?",
                            f"SELECT COUNT(*) FROM orders WHERE order_date LIKE '{y}-%'") for y in YEARS],
        "category_revenue": [(f"What is the total revenue from orders of {c} products?",
                              f"SELECT SUM(orders.quantity * products.price) FROM {JOIN_PRODUCT} "
                              f"WHERE products.category = '{c}'") for c in categories],
        "product_buyers": [(f"Which customers have ordered the {p}?",
                            f"SELECT DISTINCT customers.name FROM {JOIN_CUSTOMER} JOIN products ON orders.product_id "
                            f"= products.id WHERE products.name = '{p}'") for p in products],
        "country_orders": [(f"How many orders were placed by customers from {c}?",
                            f"SELECT COUNT(*) FROM {JOIN_CUSTOMER} WHERE customers.country = '{c}'") for c in countries],
    }


def usable(db: sqlite3.Connection, query: str) -> bool:
    """The gold query returns at least one row and no NULL. (Salaries and prices are distinct, so a "highest-paid" or
    "cheapest" question has one answer.)"""
    rows = db.execute(query).fetchall()
    return bool(rows) and all(v is not None for row in rows for v in row)


# Worked demos: template, which of its questions, the thinking before the first query, and for two of them a first
# query that explores (its first value fills {result} in the thinking after it and in the final query; {value} is
# what `value` finds in the question). Queries run through the task's own tool, so each <output> holds the rows the
# policy would see.
DEMOS = [
    dict(template="department_size", index=0, thought="I need the id of the department first, then I count its employees.",
         value=r"the (\w+) department", explore="SELECT id FROM departments WHERE name = '{value}'",
         then="The department's id is {result}; now I count the employees with that department_id.",
         final="SELECT COUNT(*) FROM employees WHERE department_id = {result}"),
    dict(template="product_price", index=3, thought="The price is a column of products; I look the product up by name."),
    dict(template="city_customers", index=2,
         thought="Customers have a city column; I select the names of those who live in this city."),
    dict(template="highest_paid", index=1,
         thought="I join employees with departments, keep this department and sort by salary, highest first."),
    dict(template="units_ordered", index=5, thought="Orders hold the quantity and the product id; I join them with "
         "products and add up the quantities of this product."),
    dict(template="orders_in_year", index=0, thought="I count the orders of one year. Let me see how dates are written.",
         value=r"in (\d{4})", explore="SELECT order_date FROM orders LIMIT 3",
         then="Dates are written YYYY-MM-DD, so the orders of {value} are those whose date starts with '{value}-'."),
    dict(template="product_buyers", index=7,
         thought="I join orders with customers and products, keep this product and list each customer once."),
    dict(template="cheaper_than", index=4, thought="I count the products whose price is below the amount."),
]


def demo_solution(tool, demo: dict, question: str, gold: str) -> str:
    """The trajectory: think, (an exploring query, its rows, think,) the final query and its rows, think, answer."""
    text, final = f"<think> {demo['thought']} </think>\n", gold
    if "explore" in demo:
        value = re.search(demo["value"], question).group(1)
        query = demo["explore"].format(value=value)
        rows = tool.run(query)
        result = rows.splitlines()[1].split(" | ")[0]  # the first row's first value
        text += f"<sql> {query} </sql>" + tool.wrap(rows)
        text += f"<think> {demo['then'].format(value=value, result=result)} </think>\n"
        final = demo.get("final", gold).format(result=result)
    text += f"<sql> {final} </sql>" + tool.wrap(tool.run(final))
    return text + f"<think> The rows answer the question, so this is my query. </think>\n<answer> {final} </answer>"


def main() -> None:
    make_database(HERE / "shop.db")
    spec = importlib.util.spec_from_file_location("sql_example_task", HERE / "task.py")
    task = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = task
    spec.loader.exec_module(task)  # the tool the demos are written with (it registers the task in this process)

    db = sqlite3.connect(HERE / "shop.db")
    rng = random.Random(0)
    by_template = {name: [item for item in items if usable(db, item[1])] for name, items in templates(db).items()}
    demos = []
    for demo in DEMOS:
        question, gold = by_template[demo["template"]].pop(demo["index"])
        demos.append({"id": f"demo-{len(demos)}", "question": question, "query": gold,
                      "solution": demo_solution(task.sql_tool(), demo, question, gold)})
    pool = []
    for name, items in by_template.items():
        rng.shuffle(items)
        pool += [(name, q, g) for q, g in items[:PER_TEMPLATE]]
    rng.shuffle(pool)
    needed = sum(SIZES.values())
    if len(pool) < needed:
        raise SystemExit(f"only {len(pool)} questions for {needed}: add templates or raise PER_TEMPLATE")
    (HERE / "data").mkdir(exist_ok=True)
    start = 0
    for split, size in SIZES.items():
        records = [{"id": f"{split}-{i}", "question": q, "query": g, "template": name}
                   for i, (name, q, g) in enumerate(pool[start:start + size])]
        write(HERE / "data" / f"{split}.jsonl", records)
        start += size
    write(HERE / "data" / "demos.jsonl", demos)
    print(f"{len(pool)} questions from {len(by_template)} templates; wrote {SIZES} and {len(demos)} demos")


def write(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


if __name__ == "__main__":
    main()
