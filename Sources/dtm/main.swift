print("swift-dtm")
