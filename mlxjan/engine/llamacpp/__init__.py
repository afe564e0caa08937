"""Everything llama.cpp: loader, batch, decode, grammars."""
