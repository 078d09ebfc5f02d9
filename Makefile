# Plank: PGXS build of the extension (library, SQL script) and install of the
# frontend bundle.  CI passes -Werror through PG_CFLAGS; it is not hard-coded.
# Builds in the source tree, or out of it (one build directory per PostgreSQL
# major version):  make -C BUILDDIR -f SRCDIR/Makefile VPATH=SRCDIR PG_CONFIG=...

EXTENSION = plank
MODULE_big = plank
# the directory of this Makefile ("./" in a build in the source tree)
PLANK_SRC := $(dir $(firstword $(MAKEFILE_LIST)))
OBJS = $(patsubst $(PLANK_SRC)%.c,%.o,$(wildcard $(PLANK_SRC)src/*.c))
DATA = plank--1.0.sql
PGFILEDESC = "plank - push committed changes to WebSocket clients"

DEP_CFLAGS := $(shell pkg-config --cflags libwebsockets libcrypto)
DEP_LIBS := $(shell pkg-config --libs libwebsockets libcrypto)
PG_CPPFLAGS = -I$(srcdir)/src $(DEP_CFLAGS)
SHLIB_LINK = $(DEP_LIBS)

REGRESS = track capture publish
REGRESS_OPTS = --inputdir=$(PLANK_SRC)test --outputdir=test --load-extension=plank

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# every source file includes the shared headers
$(OBJS): $(wildcard $(PLANK_SRC)src/*.h)

# out of the source tree, the objects go to BUILDDIR/src
$(shell mkdir -p src)

# Built frontend bundle (frontend/dist, made by `npm run build` in frontend/)
# goes to SHAREDIR/plank/www, the default of plank.static_dir.
WWWDIR = $(DESTDIR)$(datadir)/plank/www

install: install-www
.PHONY: install-www
install-www:
	@if [ -f $(PLANK_SRC)frontend/dist/index.html ]; then \
		$(MKDIR_P) '$(WWWDIR)' && rm -rf '$(WWWDIR)'/* && cp -R $(PLANK_SRC)frontend/dist/. '$(WWWDIR)/'; \
		echo "installed frontend bundle into $(WWWDIR)"; \
	else \
		echo "frontend/dist not built: run 'npm ci && npm run build' in frontend/ to serve the demo page"; \
	fi
