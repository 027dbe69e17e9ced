"""`python -m service`: serve on MEMPLAN_HOST:MEMPLAN_PORT."""

from service.app import run_server
from service.settings import get_settings

if __name__ == "__main__":
    run_server(get_settings())
