# Plank: PGXS build of the extension (library, SQL script) and install of the
# frontend bundle.  CI passes -Werror through PG_CFLAGS; it is not hard-coded.

EXTENSION = plank
MODULE_big = plank
OBJS = $(patsubst %.c,%.o,$(wildcard src/*.c))
DATA = plank--1.0.sql
PGFILEDESC = "plank - push committed changes to WebSocket clients"

DEP_CFLAGS := $(shell pkg-config --cflags libwebsockets libcrypto)
DEP_LIBS := $(shell pkg-config --libs libwebsockets libcrypto)
PG_CPPFLAGS = -I$(srcdir)/src $(DEP_CFLAGS)
SHLIB_LINK = $(DEP_LIBS)

REGRESS = track capture publish
REGRESS_OPTS = --inputdir=test --outputdir=test --load-extension=plank

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# every source file includes the shared headers
$(OBJS): $(wildcard src/*.h)

# Built frontend bundle (frontend/dist, made by `npm run build` in frontend/)
# goes to SHAREDIR/plank/www, the default of plank.static_dir.
WWWDIR = $(DESTDIR)$(datadir)/plank/www

install: install-www
.PHONY: install-www
install-www:
	@if [ -f frontend/dist/index.html ]; then \
		$(MKDIR_P) '$(WWWDIR)' && rm -rf '$(WWWDIR)'/* && cp -R frontend/dist/. '$(WWWDIR)/'; \
		echo "installed frontend bundle into $(WWWDIR)"; \
	else \
		echo "frontend/dist not built: run 'npm ci && npm run build' in frontend/ to serve the demo page"; \
	fi
