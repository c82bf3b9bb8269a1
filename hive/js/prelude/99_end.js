// The factory's result: what glue.c calls.
return api;
