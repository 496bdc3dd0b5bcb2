from rtsal.cli import entry

if __name__ == "__main__":  # guarded: worker processes started by multiprocessing "spawn" import this module
    entry()
