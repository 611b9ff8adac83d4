"""TMMLU+ as a task: its 66 subjects and four categories, and the accuracy metrics computed over them."""
