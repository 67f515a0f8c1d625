"""`python -m schema.export` prints the SDL that schema.graphql must equal."""

from schema import export_sdl

if __name__ == "__main__":
    print(export_sdl(), end="")
