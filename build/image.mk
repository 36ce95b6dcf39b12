# The appliance: included by the Makefile. Everything runs `python -m build` from the
# repository (the package `build` shadows PyPA's build and is never installed).
#   make image [VENDOR=path/to/vendor.toml] [MIRROR=http://mirror/debian]
#   make provision DISK=/dev/sdX [FS=ext4|exfat] [ENCRYPTION=aes-256-gcm|none] [YES=1]
#   make run            build if out of date, then boot it in QEMU with demo disks
#   make image-test     the appliance tests (unit, static ISO checks, QEMU boots)
#   make image-clean    remove build/work (caches included) and dist

BUILD := $(BIN)/python -m build
VENDOR_ARG := $(if $(VENDOR),--vendor $(abspath $(VENDOR)))

.PHONY: image provision run image-test image-clean pxe-url

image: install
	$(BUILD) image $(VENDOR_ARG)

provision: image
	@if [ -z "$(DISK)" ]; then echo "Name the disk: make provision DISK=/dev/sdX"; exit 2; fi
	$(BUILD) provision --disk "$(DISK)" --fs "$(or $(FS),ext4)" \
		--encryption "$(or $(ENCRYPTION),aes-256-gcm)" $(VENDOR_ARG) $(if $(YES),--yes)

run: image
	$(BUILD) run $(VENDOR_ARG)

# Point a PXE bundle at the HTTP address it is served from.
pxe-url: install
	@if [ -z "$(URL)" ]; then echo "make pxe-url URL=http://server/path/<bundle> [BUNDLE=dir]"; exit 2; fi
	$(BUILD) pxe-url --bundle "$(or $(BUNDLE),$(wildcard dist/*-pxe))" --url "$(URL)" $(VENDOR_ARG)

image-test: install
	$(BIN)/pytest tests/build $(PYTEST_ARGS)

image-clean:
	rm -rf build/work dist
