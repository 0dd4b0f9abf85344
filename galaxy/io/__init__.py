"""Reading images: the reference readers (JPEG/PNG, FITS), the FITS colour composite, band choice, sky position. Torch-free."""
